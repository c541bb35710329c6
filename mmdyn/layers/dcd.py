"""DCD (Li et al., ICLR 2021): dynamic convolution decomposition,
``W(x) = Lambda(x) W0 + P Phi(x) Q^T``."""
import math
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .base import DynamicConv2d, IntOrPair
from .conv_precision import pixelwise_matmul
from .dcd_fused import (MAX_LATENT_DIM, MAX_SQUEEZE_CHANNELS,
                        dcd_folded_kernels)
from .functional import (attention_branch, batch_norm_affine, global_avg_pool,
                         hard_sigmoid_gate, soften)
from .side_stream import SideStream


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
class DCDConv2d(DynamicConv2d):
    """Dynamic convolution decomposition, as the authors released it.

    ``out = Lambda(x) * conv(x, W0) + p(bn2(Phi(x) z) + z)``, with
    ``z = bn1(q(x))``: a static kernel ``W0`` (``conv``) scaled per output
    channel by ``Lambda(x)``, plus a dynamic 1x1 residual through an
    L-dimensional latent space: ``q`` (Q^T, in -> L, with the layer's
    stride), ``Phi(x)`` (per-sample L x L) and ``p`` (P, L -> out). For a
    kxk kernel the residual acts on the kernel's centre tap ("channel fusion
    alone", Sec. 4.3). ``Lambda`` and ``Phi`` come from a branch on the
    pooled input: ``fc`` (linear + small SE), then ``fc_scale`` (gate
    ``relu6(v + 3) / 3``, range 0-2) and ``fc_phi``.

    Where it can (:meth:`can_fold`: BatchNorms in eval mode, as with
    ``norm_eval=True``, and a dense ``W0``), the kernels are smaller than
    the activations and the batch is small (at most
    :attr:`fold_max_batch`), the layer folds ``Lambda(x) W0`` and the
    residual into one kernel per sample (:attr:`fold_attentions` overrides
    the choice); the result is the same.

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
        Others: see :class:`mmdyn.layers.DynamicConv2d`. ``groups`` applies
            to ``W0``; the residual is a dense 1x1. ``bias=True`` adds a
            static bias to the output.
    """

    #: The fold turns the dense conv with ``W0`` into one with a kernel per
    #: sample, which cuDNN runs as a grouped conv over the batch: as fast at
    #: detection's 2 images a GPU, 3x slower at 200 (H100).
    fold_max_batch: int = 8

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
        put the 1x1 residual on the centre tap of the kxk kernel for any
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
            pooled = F.adaptive_avg_pool2d(x, self.pool_size).flatten(1)
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

    def can_fold(self) -> bool:
        """Whether the layer can be one per-sample kernel: its BatchNorms
        use running statistics (an affine map each) and ``W0`` is dense
        like the residual."""
        return self.groups == 1 and all(
            isinstance(bn, _BatchNorm) and not bn.training
            and bn.running_var is not None for bn in (self.bn1, self.bn2))

    def folds_attentions(self, x: Tensor) -> bool:
        if self.fold_attentions is None and x.shape[0] > self.fold_max_batch:
            return False
        return super().folds_attentions(x)

    def cuda_graph_key(self) -> tuple:
        return super().cuda_graph_key() + (self.fold_max_batch, )

    def uses_triton(self, x: Tensor) -> bool:
        """Whether forward computes input ``x``'s per-sample kernels with
        the fused Triton kernels (:mod:`mmdyn.layers.dcd_fused`), with or
        without gradients: where :attr:`triton_kernels` allows it, for
        float32 and float64 outside autocast, ``torch.compile`` and tracing,
        where the layer folds (:meth:`can_fold`, :meth:`folds_attentions`),
        pools to 1x1 and has no hooks on its dynamic branch."""
        if not self._triton_can_run(
                x, [self.conv.weight, self.fc_phi.weight, self.p.weight],
                [self.fc, self.fc_phi, self.fc_scale]):
            return False
        return (self.pool_size == 1 and self.can_fold()
                and (self.bn1.weight is None) == (self.bn2.weight is None)
                and self.fc[0].out_features <= MAX_SQUEEZE_CHANNELS
                and self.latent_dim <= MAX_LATENT_DIM
                and self.folds_attentions(x))

    def forward(self, x: Tensor,
                input_sum: Optional[Tensor] = None) -> Tensor:
        """``input_sum``: ``x`` summed over its pixels (B, C), where the
        caller has it (:meth:`takes_input_sum`); else the layer sums ``x``
        where it needs to."""
        kernels = self._per_sample_kernels(x, input_sum)
        if kernels is not None:
            return self.per_sample(x, *kernels)
        return self._unfolded_forward(x)

    def forward_split_bias(
            self,
            x: Tensor,
            input_sum: Optional[Tensor] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """``forward(x)`` as ``(out, bias)``, ``forward(x) == out +
        bias[:, :, None, None]``: where the layer folds, the per-sample
        bias (B, out_channels) is left to the caller, which can add it in
        a pass over ``out`` that it makes anyway (the BatchNorm after the
        conv, :func:`mmdyn.layers.conv_then_norm`) instead of one of its
        own. ``bias`` is None where the layer does not fold."""
        kernels = self._per_sample_kernels(x, input_sum)
        if kernels is None:
            return self._unfolded_forward(x), None
        weight, bias = kernels
        return self.per_sample(x, weight), bias

    def _per_sample_kernels(
            self, x: Tensor, input_sum: Optional[Tensor]
    ) -> Optional[Tuple[Tensor, Tensor]]:
        """The folded kernels (B, out, in, kh, kw) and biases (B, out) of
        input ``x``, or None where the layer does not fold."""
        if self.uses_triton(x):
            return dcd_folded_kernels(self, x, input_sum)
        if self.can_fold() and self.folds_attentions(x):
            return self._folded_kernels(x)
        return None

    def _unfolded_forward(self, x: Tensor) -> Tensor:
        """Eq. 4 on the activations: the static conv's output scaled by
        Lambda, plus the residual through the latent space."""
        dynamics = self.dynamics(x)
        out = self.conv(x) * dynamics.scale[:, :, None, None]
        pads = self.residual_padding()
        latent = self.bn1(self.q(F.pad(x, pads) if any(pads) else x))
        flat = latent.flatten(2)
        flat = self.bn2(pixelwise_matmul(dynamics.phi, flat)) + flat
        out = out + self.p(flat.view_as(latent))
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out

    def _folding_constants(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The parts of the folded kernel that depend on the parameters
        alone: ``P diag(a2)``, ``diag(a1) Q^T``, ``c1`` and ``P c2`` (plus
        the layer's bias)."""
        a1, c1 = batch_norm_affine(self.bn1)
        a2, c2 = batch_norm_affine(self.bn2)
        p = self.p.weight.flatten(1)
        bias = p @ c2
        if self.bias is not None:
            bias = bias + self.bias
        return p * a2, a1[:, None] * self.q.weight.flatten(1), c1, bias

    def _folded_kernels(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Eq. 4 of the DCD paper as one kernel per sample, with the
        BatchNorms as affine maps ``a * v + c``:

        ``W = Lambda W0 + M diag(a1) Q^T`` at the centre tap and the bias
        ``M c1 + P c2``, where ``M = P (diag(a2) Phi + I)``.

        The parameter-only parts are computed on a side stream while the
        attention branch runs (:class:`SideStream`).
        """
        side = SideStream(x.device)
        with side:
            constants = self._folding_constants()
        dynamics = self.dynamics(x)
        p_a2, q_a1, c1, static_bias = side.join(constants)
        batch = x.shape[0]
        p = self.p.weight.flatten(1)
        mixing = torch.baddbmm(p, p_a2.expand(batch, *p.shape),
                               dynamics.phi)
        residual = mixing @ q_a1
        bias = mixing @ c1 + static_bias
        kh, kw = self.kernel_size
        residual = residual.view(batch, self.out_channels, self.in_channels,
                                 1, 1)
        if (kh, kw) != (1, 1):
            centre_h, centre_w = (kh - 1) // 2, (kw - 1) // 2
            residual = F.pad(residual, (centre_w, kw - 1 - centre_w,
                                        centre_h, kh - 1 - centre_h))
        weight = torch.addcmul(residual,
                               dynamics.scale[:, :, None, None, None],
                               self.conv.weight)
        return weight, bias.to(weight.dtype)

    def extra_repr(self) -> str:
        text = super().extra_repr() + f', latent_dim={self.latent_dim}'
        if self.pool_size != 1:
            text += f', pool_size={self.pool_size}'
        return text
