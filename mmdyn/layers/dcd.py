"""DCD (Li et al., ICLR 2021): dynamic convolution decomposition,
``W(x) = Lambda(x) W0 + P Phi(x) Q^T``."""
import math
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS
from torch import Tensor, nn

from ..ops import dcd_conv as low_rank
from ..ops import dcd_weights as fused
from .base import BaseDynamicConv2d, IntOrPair
from .functional import (adaptive_avg_pool2x2, attention_branch,
                         global_avg_pool, hard_sigmoid_gate, soften)


class DCDDynamics(NamedTuple):
    """The input-dependent parts of one batch."""
    scale: Tensor  # (B, out_channels): Lambda(x), the diagonal of Eq. 4
    phi: Tensor  # (B, L, L): Phi(x)


class SqueezeGate(nn.Module):
    """``y * gate(fc(y))``: the small SE block of the authors' code, whose
    parameter is named ``fc.0.weight``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels, bias=False))

    @property
    def weight(self) -> Tensor:
        """The gate's (channels, channels) weight."""
        return self.fc[0].weight

    def forward(self, y: Tensor) -> Tensor:
        return y * hard_sigmoid_gate(self.fc(y))


def default_latent_dim(in_channels: int, pool_size: int) -> int:
    """L of the authors' ResNet code: ``int(sqrt(in_channels * pool^2))``."""
    return int(math.sqrt(in_channels * pool_size**2))


def default_squeeze_channels(in_channels: int, latent_dim: int,
                             pool_size: int) -> int:
    """Width of the dynamic branch in the authors' ResNet code:
    ``max(in_channels * pool^2, L^2) // 16``, at least 4."""
    return max(max(in_channels * pool_size**2, latent_dim**2) // 16, 4)


def _norm_1d_cfg(norm_cfg: dict) -> dict:
    """The norm config for (B, L, H*W) tensors: 'BN' becomes 'BN1d'."""
    cfg = dict(norm_cfg)
    if cfg['type'] in ('BN', 'BN2d'):
        cfg['type'] = 'BN1d'
    return cfg


@MODELS.register_module()
class DCDConv2d(BaseDynamicConv2d):
    """Dynamic convolution decomposition, as the authors released it.

    ``out = Lambda(x) * conv(x, W0) + p(bn2(Phi(x) z) + z)``, with
    ``z = bn1(q(x))``: a static weight ``W0`` (``conv``) scaled per output
    channel by ``Lambda(x)``, plus a dynamic 1x1 residual through an
    L-dimensional latent space: ``q`` (Q^T, in -> L, with the layer's
    stride), ``Phi(x)`` (per-sample L x L) and ``p`` (P, L -> out). For a
    kxk filter the residual acts on its centre tap ("channel fusion
    alone", Sec. 4.3). ``Lambda`` and ``Phi`` come from a branch on the
    pooled input: ``fc`` (linear + small SE), then ``fc_scale`` (gate
    ``relu6(v + 3) / 3``, range 0-2) and ``fc_phi``.

    Where the fused op applies (:mod:`mmdyn.ops.dcd_weights`: CUDA,
    BatchNorms in eval mode as with ``norm_eval=True``, a dense ``W0``; see
    :func:`mmdyn.ops.may_fuse`), ``Lambda(x) W0`` and the residual are
    folded into one weight and bias per sample (Eq. 4 of the paper, the
    BatchNorms as affine maps) by a few Triton kernels instead; at
    inference on a large batch one conv kernel computes Eq. 4 whole
    (:mod:`mmdyn.ops.dcd_conv`). The result is the same.

    Where the released code differs from the paper (``bn1``, ``bn2``, the
    identity added to Phi, the 0-2 gate, the rules for L and the branch
    width), this follows the code, so the authors' checkpoints load.

    Args:
        latent_dim (int, optional): L. Default: ``int(sqrt(in_channels *
            pool_size**2))`` as in the authors' ResNet.
        squeeze_channels (int, optional): Width of the dynamic branch.
            Default: ``max(in_channels * pool_size**2, L**2) // 16``, at
            least 4.
        pool_size (int): The branch pools the input to ``pool_size x
            pool_size`` (1, or 2 as in the authors' ResNet-18 and some
            MobileNetV2 layers). Default: 1.
        norm_cfg (dict): Norm of the latent features; 'BN' gives
            BatchNorm2d ``bn1`` and BatchNorm1d ``bn2`` as the authors'.
            Default: ``dict(type='BN')``.
        temperature (float): DCD has no softmax; mmdyn divides the logits of
            Lambda and Phi by it, so a large temperature moves the layer
            towards the static ``W0 + P Q^T`` (Lambda -> 1, Phi -> 0).
        Others: see :class:`mmdyn.layers.BaseDynamicConv2d`. ``groups`` applies
            to ``W0``; the residual is a dense 1x1. ``bias=True`` adds a
            static bias to the output.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: IntOrPair = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: bool = False,
                 latent_dim: Optional[int] = None,
                 squeeze_channels: Optional[int] = None,
                 pool_size: int = 1,
                 norm_cfg: Optional[dict] = None,
                 temperature: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, temperature)
        name = type(self).__name__
        if pool_size not in (1, 2):
            raise ValueError(
                f'{name}: pool_size must be 1 or 2, got {pool_size!r}')
        if latent_dim is None:
            latent_dim = default_latent_dim(in_channels, pool_size)
        if squeeze_channels is None:
            squeeze_channels = default_squeeze_channels(
                in_channels, latent_dim, pool_size)
        for arg, value in (('latent_dim', latent_dim),
                           ('squeeze_channels', squeeze_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f'{name}: {arg} must be a positive int, got {value!r}')
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        self.latent_dim = latent_dim
        self.pool_size = pool_size

        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel_size,
                              groups=groups, bias=False,
                              **self.conv_kwargs())
        self.q = nn.Conv2d(in_channels, latent_dim, 1, self.stride,
                           bias=False)
        self.p = nn.Conv2d(latent_dim, out_channels, 1, bias=False)
        self.bn1 = build_norm_layer(norm_cfg, latent_dim)[1]
        self.bn2 = build_norm_layer(_norm_1d_cfg(norm_cfg), latent_dim)[1]
        self.fc = nn.Sequential(
            nn.Linear(in_channels * pool_size**2, squeeze_channels,
                      bias=False), SqueezeGate(squeeze_channels))
        self.fc_phi = nn.Linear(squeeze_channels, latent_dim**2, bias=False)
        self.fc_scale = nn.Linear(squeeze_channels, out_channels, bias=False)
        for conv in (self.conv, self.q, self.p):
            nn.init.kaiming_normal_(
                conv.weight, mode='fan_out', nonlinearity='relu')

    def residual_padding(self) -> Tuple[int, int, int, int]:
        """``F.pad`` amounts (left, right, top, bottom; negative crops) that
        put the 1x1 residual on the centre tap of the kxk filter for any
        padding and dilation. All zero for 'same' padding."""
        pads = []
        for k, p, d in zip(self.kernel_size[::-1], self.padding[::-1],
                           self.dilation[::-1]):
            centre = (k - 1) // 2
            pads += [p - d * centre, p - d * (k - 1 - centre)]
        return tuple(pads)

    @attention_branch
    def dynamics(self, x: Tensor) -> DCDDynamics:
        """Lambda(x) and Phi(x) of a batch."""
        dtype = self.fc_phi.weight.dtype
        if self.pool_size == 1:
            pooled = global_avg_pool(x, dtype)
        else:
            pooled = adaptive_avg_pool2x2(x).flatten(1)
            pooled = pooled.to(dtype)
        hidden = self.fc(pooled)
        phi = soften(self.fc_phi(hidden), self.temperature)
        scale = hard_sigmoid_gate(soften(self.fc_scale(hidden),
                                         self.temperature))
        return DCDDynamics(
            scale=scale,
            phi=phi.view(-1, self.latent_dim, self.latent_dim))

    def attention_maps(self, x: Tensor) -> Dict[str, Tensor]:
        """``scale``: Lambda(x), (B, out); ``phi``: Phi(x), (B, L, L)."""
        return self.dynamics(x)._asdict()

    def load_static_weight(self, weight: Tensor,
                           bias: Optional[Tensor] = None) -> None:
        """``W0`` becomes ``weight``; ``fc_scale`` is zeroed (Lambda = 1)
        and so is ``p`` (no residual yet), so the layer starts as the static
        conv; P then learns from its gradient."""
        self._check_static(weight, bias)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.fc_scale.weight.zero_()
            self.p.weight.zero_()
        self._load_static_bias(bias)

    def forward(self, x: Tensor) -> Tensor:
        if fused.applies(self, x):
            return self.per_sample(x, *fused.dcd_weights(self, x))
        return self._decomposed(x)

    def forward_split_bias(
            self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """``forward(x)`` as ``(out, bias)``, ``forward(x) == out +
        bias[:, :, None, None]``: where the fused op folds the layer into
        per-sample weights, their per-sample bias (B, out) is left to the
        caller, which can add it in a pass it makes anyway (the BatchNorm
        after the conv, :func:`mmdyn.ops.conv_norm.conv_then_norm`);
        elsewhere ``bias`` is None."""
        if fused.applies(self, x):
            weight, bias = fused.dcd_weights(self, x)
            return self.per_sample(x, weight), bias
        return self._decomposed(x), None

    def _decomposed(self, x: Tensor) -> Tensor:
        """Eq. 4 on the activations: the static conv's output scaled by
        Lambda(x), plus the residual through the latent space."""
        if low_rank.applies(self, x):  # inference at a large batch
            return low_rank.dcd_conv(self, x)
        dynamics = self.dynamics(x)
        out = self.conv(x) * dynamics.scale[:, :, None, None]
        pads = self.residual_padding()
        latent = self.bn1(self.q(F.pad(x, pads) if any(pads) else x))
        flat = latent.flatten(2)
        flat = self.bn2(torch.bmm(dynamics.phi, flat)) + flat
        out = out + self.p(flat.view_as(latent))
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out

    def extra_repr(self) -> str:
        text = super().extra_repr() + f', latent_dim={self.latent_dim}'
        if self.pool_size != 1:
            text += f', pool_size={self.pool_size}'
        return text
