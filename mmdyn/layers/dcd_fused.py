"""DCD's folded kernels for inference in four Triton kernels
(:mod:`mmdyn.layers.dcd_kernels`): from the pooled input to the per-sample
kernels and biases of Eq. 4 of the DCD paper.

Written with PyTorch operations, the dynamic branch and the fold of one
layer launch about 25 kernels, most of them on vectors; a ResNet-50 has 48
such layers. Here they are

- ``squeeze_fwd``: the branch's first product, ``fc[0]`` on the pooled
  mean;
- ``heads_fwd``: its squeeze gate, Phi(x) and Lambda(x);
- ``mixing_fwd``: ``M = P (diag(a2) Phi + I)`` and the per-sample bias
  ``M c1 + P c2``, the BatchNorms as the affine maps of their running
  statistics;
- ``fold_fwd``: ``Lambda W0 + M diag(a1) Q^T`` at the centre tap.

Forward only: with gradients DCD runs its PyTorch operations.
"""
from typing import Tuple

from torch import Tensor

from .triton_support import accumulator, cdiv, next_pow2

#: Widest dynamic branch and largest latent space the kernels take.
MAX_SQUEEZE_CHANNELS = 512
MAX_LATENT_DIM = 128


def _bn_args(bn):
    dummy = bn.running_mean
    return (bn.running_mean, bn.running_var,
            dummy if bn.weight is None else bn.weight,
            dummy if bn.bias is None else bn.bias, bn.eps)


def dcd_folded_kernels(layer, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Per-sample kernels (B, out, in, kh, kw) and biases (B, out) of a
    :class:`~mmdyn.layers.DCDConv2d` for input ``x``, as its ``_folded_conv``
    computes them."""
    from . import dcd_kernels as kernels
    batch, channels, height, width = x.shape
    acc = accumulator(x.dtype)
    squeeze = layer.fc[0].weight.contiguous()
    gate = layer.fc[1].fc[0].weight.contiguous()
    width_s = squeeze.shape[0]
    latent = layer.latent_dim
    out_channels, in_channels = layer.out_channels, layer.in_channels
    affine = layer.bn1.weight is not None and layer.bn2.weight is not None

    pooled = x.sum(dim=(2, 3))
    squeezed = x.new_empty(batch, width_s)
    rows = 32
    kernels.squeeze_fwd[(batch, cdiv(width_s, rows))](
        pooled, height * width, squeeze, squeezed, channels, width_s,
        BS=rows, BC=128, ACC=acc)

    phi = x.new_empty(batch, latent, latent)
    scale = x.new_empty(batch, out_channels)
    squeeze_tile = next_pow2(width_s)
    head_rows = max(1, min(64, 8192 // squeeze_tile))
    kernels.heads_fwd[(batch, cdiv(latent * latent + out_channels,
                                   head_rows))](
        squeezed, gate, layer.fc_phi.weight.contiguous(),
        layer.fc_scale.weight.contiguous(), phi,
        scale, width_s, latent * latent, out_channels, layer.temperature,
        BJ=head_rows, BS=squeeze_tile, BG=min(squeeze_tile, 32), ACC=acc)

    mixing = x.new_empty(batch, out_channels, latent)
    bias = x.new_empty(batch, out_channels)
    latent_tile = next_pow2(latent)
    mix_rows = max(1, min(64, 4096 // latent_tile))
    kernels.mixing_fwd[(batch, cdiv(out_channels, mix_rows))](
        phi, layer.p.weight.contiguous(), *_bn_args(layer.bn1),
        *_bn_args(layer.bn2),
        layer.bias if layer.bias is not None else bias, mixing, bias,
        out_channels, latent, HAS_AFFINE=affine,
        HAS_BIAS=layer.bias is not None, BO=mix_rows, BL=latent_tile,
        ACC=acc)

    kh, kw = layer.kernel_size
    taps = kh * kw
    weight = x.new_empty(batch, out_channels, in_channels, kh, kw)
    tap_tile = next_pow2(taps)
    cols = min(32, next_pow2(in_channels))
    fold_rows = max(1, min(next_pow2(out_channels),
                           4096 // (cols * tap_tile)))
    kernels.fold_fwd[(cdiv(out_channels, fold_rows),
                      cdiv(in_channels, cols))](
        mixing, scale, layer.q.weight.contiguous(), *_bn_args(layer.bn1),
        layer.conv.weight.contiguous(), weight, batch, out_channels,
        in_channels, taps, latent, (kh - 1) // 2 * kw + (kw - 1) // 2,
        HAS_AFFINE=affine,
        BO=fold_rows, BC=cols, BT=tap_tile, ACC=acc)
    return weight, bias
