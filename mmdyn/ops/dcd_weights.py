"""DCD's per-sample weights as one fused op: from the input's pixel sums to
the weights and biases of Eq. 4 of the DCD paper (with eval-mode BatchNorms
as affine maps) in three Triton kernels (:mod:`mmdyn.ops.dcd_kernels`), and
back in four.

Written with PyTorch operations, the dynamic branch and the folded weights
of one layer launch about 25 GPU kernels forward and 70 backward, most of
them on vectors; a ResNet-50 has 48 such layers, and on a GPU the chain of
small launches, not arithmetic, sets their time. Here they are

- ``squeeze_fwd``: the branch's first product, ``fc[0]`` on the pooled
  mean;
- ``heads_fwd``: its squeeze gate, Phi(x) and Lambda(x);
- ``fold_fwd``: ``Lambda W0 + M diag(a1) Q^T`` at the centre tap, with
  ``M = P (diag(a2) Phi + I)``, and the per-sample bias ``M c1 + P c2``,
  the BatchNorms as the affine maps of their running statistics;

and their backward in reverse (``fold_bwd``, ``mixing_bwd``, ``heads_bwd``,
``hidden_bwd``), which reduce in a fixed order: the results do not depend
on scheduling.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._compat import BatchNormBase
from .dispatch import conv_dtype, folding_pays, may_fuse, outside_autocast
from .pixel_sums import pixel_sums
from .triton_utils import accumulator, cdiv, next_pow2

#: Widest dynamic branch and largest latent space the kernels take.
MAX_SQUEEZE_CHANNELS = 512
MAX_LATENT_DIM = 128


class FoldShape(NamedTuple):
    """What the kernels need to know of a layer besides its tensors,
    whether the call saves what the backward needs, and the dtype of the
    weights (None: that of ``W0``; under autocast that of the conv they are
    for, so that autocast need not cast them)."""
    kernel_size: Tuple[int, int]
    temperature: float
    eps1: float
    eps2: float
    save: bool
    dtype: Optional[torch.dtype] = None

    @property
    def centre(self) -> int:
        """Index of the centre tap among the kh * kw taps of a filter."""
        kh, kw = self.kernel_size
        return (kh - 1) // 2 * kw + (kw - 1) // 2


def _bn_args(mean, var, weight, bias, eps):
    return (mean, var, mean if weight is None else weight,
            mean if bias is None else bias, eps)


def _fold_tiles(out_channels: int, in_channels: int, taps: int):
    """Rows, columns and taps of the fold kernels' tiles (rows and columns
    at least 16: the sides of a product)."""
    tap_tile = next_pow2(taps)
    if taps == 1:
        return 64, 64, 1
    rows = max(16, min(64, 4096 // (16 * tap_tile)))
    return rows, 16, tap_tile


def _latent_tile(latent: int) -> int:
    return max(16, next_pow2(latent))


def _parts_per_load(count: int, tile: int) -> int:
    """How many partial sums of ``tile`` numbers to load at once."""
    return max(1, min(next_pow2(count), 8192 // tile))


class _Branch(NamedTuple):
    """What the branch's kernels write: ``squeezed`` (B, S), Phi(x) (B, L,
    L) and Lambda(x) (B, CO); with ``save``, also the gate's logits and
    ``hidden`` (B, S) and Lambda's logits (B, CO) for the backward (else
    these are ``scale``)."""
    squeezed: Tensor
    phi: Tensor
    scale: Tensor
    gate: Tensor
    hidden: Tensor
    scale_logits: Tensor


def _dynamics(pooled: Tensor, pixels: int, w_in: Tensor, w_gate: Tensor,
              w_phi: Tensor, w_scale: Tensor, latent: int,
              temperature: float, save: bool) -> _Branch:
    """The dynamic branch from the pixel sums ``pooled`` (B, C): ``fc[0]``
    on their mean, the squeeze gate, then ``fc_phi`` and ``fc_scale``; the
    weights contiguous."""
    from . import dcd_kernels as gpu
    batch, channels = pooled.shape
    width = w_in.shape[0]
    out_channels = w_scale.shape[0]
    acc = accumulator(pooled.dtype)
    new = pooled.new_empty
    squeezed = new(batch, width)
    rows = 32
    gpu.squeeze_fwd[(batch, cdiv(width, rows))](
        pooled, pixels, w_in, squeezed, channels, width, BS=rows, BC=128,
        ACC=acc)
    phi = new(batch, latent, latent)
    scale = new(batch, out_channels)
    gate = new(batch, width) if save else scale
    hidden = new(batch, width) if save else scale
    scale_logits = new(batch, out_channels) if save else scale
    squeeze_tile = next_pow2(width)
    head_rows = max(1, min(64, 8192 // squeeze_tile))
    gpu.heads_fwd[(batch, cdiv(latent * latent + out_channels, head_rows))](
        squeezed, w_gate, w_phi, w_scale, phi, scale, gate, hidden,
        scale_logits, width, latent * latent, out_channels, temperature,
        SAVE=save, BJ=head_rows, BS=squeeze_tile, BG=min(squeeze_tile, 32),
        ACC=acc)
    return _Branch(squeezed, phi, scale, gate, hidden, scale_logits)


class FusedDCDWeights(torch.autograd.Function):
    """Pixel sums (B, C) -> per-sample weights (B, CO, CI, kh, kw) and
    biases (B, CO).

    Inputs after the shape: the pixel sums and the pixel count they sum;
    the weights of ``fc[0]``, the squeeze gate, ``fc_phi`` and
    ``fc_scale``; P (CO, L) and Q (L, CI); W0; bn1's and bn2's running mean
    and variance, weight and bias (None without affine); the layer's bias
    (or None).
    """

    @staticmethod
    def forward(ctx, shape: FoldShape, pooled: Tensor, pixels: int,
                w_in: Tensor, w_gate: Tensor, w_phi: Tensor,
                w_scale: Tensor, p: Tensor, q: Tensor, w0: Tensor,
                mean1: Tensor, var1: Tensor, bn1_w: Optional[Tensor],
                bn1_b: Optional[Tensor], mean2: Tensor, var2: Tensor,
                bn2_w: Optional[Tensor], bn2_b: Optional[Tensor],
                bias: Optional[Tensor]):
        from . import dcd_kernels as gpu
        save = shape.save
        # the kernels index them as dense row-major arrays
        w_in, w_gate, w_phi, w_scale, p, q, w0 = (
            t.contiguous() for t in (w_in, w_gate, w_phi, w_scale, p, q, w0))
        batch, channels = pooled.shape
        out_channels, latent = p.shape
        in_channels = q.shape[1]
        acc = accumulator(pooled.dtype)
        affine = bn1_w is not None
        new = pooled.new_empty

        squeezed, phi, scale, gate, hidden, scale_logits = _dynamics(
            pooled, pixels, w_in, w_gate, w_phi, w_scale, latent,
            shape.temperature, save)

        bn1 = _bn_args(mean1, var1, bn1_w, bn1_b, shape.eps1)
        bn2 = _bn_args(mean2, var2, bn2_w, bn2_b, shape.eps2)
        kh, kw = shape.kernel_size
        taps = kh * kw
        weight = w0.new_empty(batch, out_channels, in_channels, kh, kw,
                              dtype=shape.dtype)
        folded_bias = new(batch, out_channels)
        mixing = new(batch, out_channels, latent) if save else scale
        mixing_a1 = new(batch, latent, out_channels) if save else scale
        rows, cols, tap_tile = _fold_tiles(out_channels, in_channels, taps)
        gpu.fold_fwd[(cdiv(out_channels, rows),
                      cdiv(in_channels, cols))](
            phi, scale, p, q, w0, *bn1, *bn2,
            bias if bias is not None else folded_bias, weight, folded_bias,
            mixing, mixing_a1, batch, out_channels, in_channels, taps, latent,
            shape.centre, HAS_AFFINE=affine, HAS_BIAS=bias is not None,
            SAVE=save, BO=rows, BC=cols, BT=tap_tile,
            BL=_latent_tile(latent), ACC=acc)

        if save:
            ctx.shape, ctx.pixels = shape, pixels
            ctx.affine, ctx.has_bias = affine, bias is not None
            ctx.save_for_backward(pooled, squeezed, gate, hidden, phi, scale,
                                  scale_logits, mixing, mixing_a1, w_in,
                                  w_gate, w_phi, w_scale, p, q, w0, mean1,
                                  var1, bn1_w, bn1_b, mean2, var2, bn2_w,
                                  bn2_b)
        return weight, folded_bias

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_weight: Tensor, grad_bias: Tensor):
        from . import dcd_kernels as gpu
        (pooled, squeezed, gate, hidden, phi, scale, scale_logits, mixing,
         mixing_a1, w_in, w_gate, w_phi, w_scale, p, q, w0, mean1, var1,
         bn1_w, bn1_b, mean2, var2, bn2_w, bn2_b) = ctx.saved_tensors
        shape = ctx.shape
        batch, channels = pooled.shape
        width = w_in.shape[0]
        out_channels, latent = p.shape
        in_channels = q.shape[1]
        taps = w0[0, 0].numel()
        acc = accumulator(pooled.dtype)
        new = pooled.new_empty
        grad_weight = grad_weight.contiguous()
        grad_bias = grad_bias.contiguous()
        bn1 = _bn_args(mean1, var1, bn1_w, bn1_b, shape.eps1)
        bn2 = _bn_args(mean2, var2, bn2_w, bn2_b, shape.eps2)

        rows, cols, tap_tile = _fold_tiles(out_channels, in_channels, taps)
        latent_tile = _latent_tile(latent)
        row_tiles = cdiv(out_channels, rows)
        col_tiles = cdiv(in_channels, cols)
        grad_w0 = torch.empty_like(w0)
        part_lam = new(batch, col_tiles, out_channels)
        part_m = new(batch, col_tiles, latent, out_channels)
        part_q = new(batch, row_tiles, latent, in_channels)
        gpu.fold_bwd[(row_tiles, col_tiles)](
            grad_weight, scale, mixing_a1, q, w0, grad_w0, part_lam, part_m,
            part_q, batch, out_channels, in_channels, taps, latent,
            shape.centre, BO=rows, BC=cols, BT=tap_tile, BL=latent_tile,
            ACC=acc)

        mix_rows = 16
        mix_tiles = cdiv(out_channels, mix_rows)
        grad_lam_logits = new(batch, out_channels)
        grad_p = torch.empty_like(p)
        grad_layer_bias = new(out_channels) if ctx.has_bias else grad_p
        part_phi = new(mix_tiles, batch, latent, latent)
        part_bn = new(mix_tiles, 4, latent)
        gpu.mixing_bwd[(mix_tiles, )](
            grad_bias, part_lam, part_m, scale_logits, mixing, phi, p, *bn1,
            *bn2, grad_lam_logits, grad_p, grad_layer_bias, part_phi,
            part_bn, batch, out_channels, latent, col_tiles,
            shape.temperature, HAS_AFFINE=ctx.affine,
            HAS_BIAS=ctx.has_bias, BO=mix_rows, BL=latent_tile,
            BP=_parts_per_load(col_tiles, mix_rows * latent_tile), ACC=acc)

        squeeze_tile = next_pow2(width)
        head_rows = max(16, min(64, 8192 // squeeze_tile))
        head_blocks = cdiv(latent * latent + out_channels, head_rows)
        q_cols = max(16, min(128, 1024 // latent_tile))
        q_blocks = cdiv(in_channels, q_cols)
        grad_w_phi = torch.empty_like(w_phi)
        grad_w_scale = torch.empty_like(w_scale)
        part_h = new(head_blocks, batch, width)
        grad_q = torch.empty_like(q)
        grad_bn = new(4, latent) if ctx.affine else grad_q
        gpu.heads_bwd[(head_blocks + q_blocks + ctx.affine, )](
            part_phi, grad_lam_logits, hidden, w_phi, w_scale, part_q,
            part_bn, *bn1, *bn2, grad_w_phi, grad_w_scale, part_h, grad_q,
            grad_bn, batch, width, latent, out_channels, in_channels,
            mix_tiles, row_tiles, head_blocks, q_blocks, shape.temperature,
            HAS_AFFINE=ctx.affine, BJ=head_rows, BS=squeeze_tile,
            BL=latent_tile, BQ=q_cols,
            BP=_parts_per_load(max(mix_tiles, batch * row_tiles),
                               max(head_rows, latent_tile * q_cols)),
            ACC=acc)

        gate_rows = max(1, min(32, 4096 // squeeze_tile))
        col_block = max(16, min(128, 4096 // squeeze_tile))
        col_blocks = cdiv(channels, col_block)
        grad_w_in = torch.empty_like(w_in)
        grad_w_gate = torch.empty_like(w_gate)
        grad_pooled = torch.empty_like(pooled)
        gpu.hidden_bwd[(col_blocks + cdiv(width, gate_rows), )](
            part_h, head_blocks, gate, squeezed, pooled, ctx.pixels, w_gate,
            w_in, grad_w_gate, grad_w_in, grad_pooled, batch, width,
            channels, col_blocks, BS=squeeze_tile, BR=gate_rows,
            BC=col_block, ACC=acc)

        bn_grads = (None, ) * 4
        if ctx.affine:
            bn_grads = tuple(grad_bn)
        return (None, grad_pooled, None, grad_w_in, grad_w_gate, grad_w_phi,
                grad_w_scale, grad_p, grad_q, grad_w0, None, None,
                bn_grads[0], bn_grads[1], None, None, bn_grads[2],
                bn_grads[3], grad_layer_bias if ctx.has_bias else None)


def _branch_taken(layer) -> bool:
    """Whether the kernels take ``layer``'s dynamic branch: a 1x1 pool and
    widths within their limits."""
    return (layer.pool_size == 1
            and layer.fc[0].out_features <= MAX_SQUEEZE_CHANNELS
            and layer.latent_dim <= MAX_LATENT_DIM)


def _branch_modules(layer) -> list:
    return [layer.fc, layer.fc_phi, layer.fc_scale]


def branch_fuses(layer, x: Tensor) -> bool:
    """Whether the kernels compute ``layer``'s dynamic branch (Lambda(x)
    and Phi(x)) for input ``x``: :func:`~mmdyn.ops.dispatch.may_fuse`
    allows it, the branch pools to 1x1 and the kernels take its widths."""
    return _branch_taken(layer) and may_fuse(
        x, [layer.fc_phi.weight], _branch_modules(layer))


def dcd_dynamics(layer, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Lambda(x) (B, out) and Phi(x) (B, L, L) of
    :class:`~mmdyn.layers.DCDConv2d` ``layer`` for input ``x``: where
    :func:`branch_fuses`, by the branch's kernels, in the dtype the op
    computes in (float32 under autocast); elsewhere by the layer's own
    branch. Forward only: call where nothing needs a gradient."""
    if not branch_fuses(layer, x):
        return tuple(layer.dynamics(x))
    weights = (t.contiguous() for t in (
        layer.fc[0].weight, layer.fc[1].weight, layer.fc_phi.weight,
        layer.fc_scale.weight))
    with outside_autocast(x):
        branch = _dynamics(pixel_sums(x), x.shape[2] * x.shape[3], *weights,
                           layer.latent_dim, float(layer.temperature),
                           save=False)
    return branch.scale, branch.phi


def applies(layer, x: Tensor) -> bool:
    """Whether :func:`dcd_weights` computes ``layer``'s weights for input
    ``x``: where :func:`~mmdyn.ops.dispatch.may_fuse` allows it (for the
    dynamic branch), both BatchNorms use running statistics (eval mode, as
    with ``norm_eval=True``: affine maps that fold into the weights), and
    the layer is dense, pools to 1x1 and has a branch the kernels take,
    and the batch is small enough for that to pay
    (:func:`~mmdyn.ops.dispatch.folding_pays`)."""
    bn1, bn2 = layer.bn1, layer.bn2
    return (layer.groups == 1
            and all(isinstance(bn, BatchNormBase) and not bn.training
                    and bn.running_var is not None for bn in (bn1, bn2))
            and (bn1.weight is None) == (bn2.weight is None)
            and _branch_taken(layer)
            and may_fuse(x, [layer.conv.weight, layer.fc_phi.weight,
                             layer.p.weight], _branch_modules(layer))
            and folding_pays(x))


def dcd_weights(layer, x: Tensor) -> Tuple[Tensor, Tensor]:
    """The per-sample weights (B, out, in, kh, kw) and biases (B, out) of
    :class:`~mmdyn.layers.DCDConv2d` ``layer`` for input ``x``: Eq. 4 of
    the DCD paper, its BatchNorms folded in, from
    :class:`FusedDCDWeights`; call where :func:`applies`."""
    bn1, bn2 = layer.bn1, layer.bn2
    tensors = (pixel_sums(x), x.shape[2] * x.shape[3],
               layer.fc[0].weight, layer.fc[1].weight, layer.fc_phi.weight,
               layer.fc_scale.weight, layer.p.weight.flatten(1),
               layer.q.weight.flatten(1), layer.conv.weight,
               bn1.running_mean, bn1.running_var, bn1.weight, bn1.bias,
               bn2.running_mean, bn2.running_var, bn2.weight, bn2.bias,
               layer.bias)
    save = torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in tensors)
    shape = FoldShape(layer.kernel_size, float(layer.temperature),
                      float(bn1.eps), float(bn2.eps), save, conv_dtype(x))
    with outside_autocast(x):
        return FusedDCDWeights.apply(shape, *tensors)
