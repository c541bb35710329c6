"""ODConv's attention branch and per-sample weights as one fused op: from
the input's pixel sums to the weights of Eq. 2 with all four attentions
folded in, in three Triton kernels, and back in three.

Written with PyTorch operations, the branch and the weights of one layer
launch about 14 GPU kernels forward and 25 backward, each on a vector or a
weight-sized tensor; a ResNet-50 has 48 such layers, and on a GPU the chain
of small launches, not arithmetic, sets their time (``docs/design.md``).
The kernels (:mod:`mmdyn.ops.odconv_kernels`) compute

- ``hidden_fwd``: ``h = relu(bn(fc(mean)))``, the BatchNorm as the affine
  map of its running statistics;
- ``gates_fwd``: the sigmoid channel, filter and spatial attentions and the
  softmax kernel-wise attention (Sec. 3.2 of the ODConv paper);
- ``fold_fwd``: the per-sample weights ``a_f a_c a_s sum_n a_w W_n``
  (Eq. 2);

and their backward in reverse (``fold_bwd``, ``heads_bwd``, ``hidden_bwd``),
which reduce in a fixed order: the results do not depend on scheduling.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .._compat import BatchNormBase
from .dispatch import conv_dtype, folding_pays, may_fuse, outside_autocast
from .pixel_sums import pixel_sums
from .triton_utils import accumulator, cdiv, next_pow2

#: Widest attention branch the backward kernel takes in one tile.
MAX_ATTENTION_CHANNELS = 512
#: Elements per tile of the fold kernels.
_FOLD_TILE = 4096
_HEAD_ROWS = 64
#: Most weights in the bank: one program takes the kernel head's rows.
MAX_WEIGHTS = _HEAD_ROWS


class FoldLayout(NamedTuple):
    """What the kernels need to know of a layer."""
    depthwise: bool
    channel: int  # NC: channel attention width (in_channels)
    filter: int  # NF: out_channels, 0 without a filter attention
    spatial: int  # NS: kh * kw, 0 without a spatial attention
    weights: int  # K: weights in the bank (kernel_num)
    out_channels: int
    in_per_group: int
    taps: int  # kh * kw


def _fold_tiles(layout: FoldLayout):
    taps = next_pow2(layout.taps)
    cols = 1 if layout.depthwise else min(
        64 if layout.taps == 1 else 32, next_pow2(layout.in_per_group))
    rows = max(1, min(_FOLD_TILE // (cols * taps),
                      next_pow2(layout.out_channels)))
    return rows, cols, taps


class FusedODConvWeights(torch.autograd.Function):
    """Pixel sums (B, C) -> per-sample weights (B, O, C / groups, kh, kw).

    Inputs after the layout: the dtype of the weights (None: that of the
    bank; under autocast that of the conv they are for, so that autocast
    need not cast them); the pixel sums and the pixel count they sum;
    the temperature; the attention's ``fc`` weight and BatchNorm (weight,
    bias, running mean and variance, eps); weight and bias of the channel,
    filter, spatial and kernel heads (None where absent); the weight bank.
    """

    @staticmethod
    def forward(ctx, layout: FoldLayout, dtype: Optional[torch.dtype],
                pooled: Tensor, pixels: int,
                temperature: float, fc_w: Tensor, bn_w: Optional[Tensor],
                bn_b: Optional[Tensor], mean: Tensor, var: Tensor,
                eps: float, w_c, b_c, w_f, b_f, w_s, b_s, w_k, b_k,
                bank: Tensor) -> Tensor:
        from . import odconv_kernels as gpu
        batch = pooled.shape[0]
        acc = accumulator(pooled.dtype)
        affine = bn_w is not None
        u, h, gates = _gates(layout, pooled, pixels, temperature, fc_w, bn_w,
                             bn_b, mean, var, eps,
                             (w_c, b_c, w_f, b_f, w_s, b_s, w_k, b_k))
        num_gates = gates.shape[1]
        out = bank.new_empty(batch, *bank.shape[1:], dtype=dtype)
        rows, cols, taps = _fold_tiles(layout)
        gpu.fold_fwd[(cdiv(layout.out_channels, rows),
                      cdiv(layout.in_per_group, cols))](
            gates, bank, out, batch, layout.out_channels,
            layout.in_per_group, layout.taps, num_gates, layout.channel,
            layout.filter, layout.spatial, NK=layout.weights,
            DEPTHWISE=layout.depthwise, HAS_FILTER=layout.filter > 0,
            HAS_SPATIAL=layout.spatial > 0, BO=rows, BC=cols, BT=taps,
            ACC=acc)
        ctx.layout = layout
        ctx.pixels, ctx.temperature, ctx.eps = pixels, temperature, eps
        ctx.affine = affine
        ctx.save_for_backward(pooled, fc_w, bn_w, mean, var, u, h, gates,
                              bank, w_c, w_f, w_s, w_k)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        from . import odconv_kernels as gpu
        (pooled, fc_w, bn_w, mean, var, u, h, gates, bank, w_c, w_f, w_s,
         w_k) = ctx.saved_tensors
        layout = ctx.layout
        batch, channels = pooled.shape
        width = fc_w.shape[0]
        num_gates = gates.shape[1]
        acc = accumulator(pooled.dtype)
        dummy = bank
        grad_out = grad_out.contiguous()

        rows, cols, taps = _fold_tiles(layout)
        row_tiles = cdiv(layout.out_channels, rows)
        col_tiles = cdiv(layout.in_per_group, cols)
        new = pooled.new_empty
        part_f = new(batch, col_tiles, layout.out_channels)
        part_c = new(batch, row_tiles, layout.in_per_group) \
            if not layout.depthwise else dummy
        part_s = new(batch, row_tiles * col_tiles, layout.spatial) \
            if layout.spatial else dummy
        part_w = new(batch, row_tiles * col_tiles, layout.weights) \
            if layout.weights > 1 else dummy
        grad_bank = torch.empty_like(bank)
        gpu.fold_bwd[(row_tiles, col_tiles)](
            gates, bank, grad_out, grad_bank, part_f, part_c, part_s, part_w,
            batch, layout.out_channels, layout.in_per_group, layout.taps,
            num_gates, layout.channel, layout.filter, layout.spatial,
            NK=layout.weights, DEPTHWISE=layout.depthwise,
            HAS_FILTER=layout.filter > 0, HAS_SPATIAL=layout.spatial > 0,
            BO=rows, BC=cols, BT=taps, ACC=acc)

        heads = (w_c, w_f, w_s, w_k)
        head_grads = [torch.empty_like(w) if w is not None else dummy
                      for w in heads]
        bias_grads = [new(w.shape[0]) if w is not None else dummy
                      for w in heads]
        blocks = _sigmoid_blocks(layout) + (layout.weights > 1)
        grad_logits = new(batch, num_gates)
        part_h = new(blocks, batch, width)
        gpu.heads_bwd[(blocks, )](
            gates, h, *[w if w is not None else dummy for w in heads],
            part_f, part_c, part_s, part_w, grad_logits, head_grads[0],
            bias_grads[0], head_grads[1], bias_grads[1], head_grads[2],
            bias_grads[2], head_grads[3], bias_grads[3], part_h, batch,
            width, layout.out_channels, layout.channel, layout.filter,
            layout.spatial, num_gates, row_tiles, col_tiles,
            ctx.temperature, NK=layout.weights, DEPTHWISE=layout.depthwise,
            BJ=_HEAD_ROWS, BA=min(next_pow2(width), 64), BR=32, ACC=acc)

        grad_fc_w = torch.empty_like(fc_w)
        grad_pooled = torch.empty_like(pooled)
        grad_bn_w = new(width) if ctx.affine else dummy
        grad_bn_b = new(width) if ctx.affine else dummy
        width_tile = next_pow2(width)
        col_block = max(16, min(128, 8192 // width_tile))
        gpu.hidden_bwd[(cdiv(channels, col_block), )](
            part_h, blocks, pooled, ctx.pixels, u, h, fc_w, mean, var,
            bn_w if ctx.affine else dummy, ctx.eps, grad_fc_w, grad_pooled,
            grad_bn_w, grad_bn_b, batch, width, channels,
            HAS_AFFINE=ctx.affine, BA=width_tile, BR=16, BC=col_block,
            ACC=acc)

        head_out = []  # every head present has a bias (a 1x1 conv's)
        for w, w_grad, b_grad in zip(heads, head_grads, bias_grads):
            head_out += [None, None] if w is None else [w_grad, b_grad]
        affine = ctx.affine
        return (None, None, grad_pooled, None, None, grad_fc_w,
                grad_bn_w if affine else None, grad_bn_b if affine else None,
                None, None, None, *head_out, grad_bank)


def _gates(layout: FoldLayout, pooled: Tensor, pixels: int,
           temperature: float, fc_w: Tensor, bn_w: Optional[Tensor],
           bn_b: Optional[Tensor], mean: Tensor, var: Tensor, eps: float,
           heads: tuple) -> Tuple[Tensor, Tensor, Tensor]:
    """The attention branch from the pixel sums ``pooled`` (B, C): its
    hidden features before and after the BatchNorm and ReLU (B, width),
    and the gates (B, NC + NF + NS [+ K]): the channel, filter and spatial
    sigmoids side by side, then the kernel-wise softmax where there is
    one. ``heads``: weight and bias of the channel, filter, spatial and
    kernel heads (None where absent)."""
    from . import odconv_kernels as gpu
    batch, channels = pooled.shape
    width = fc_w.shape[0]
    acc = accumulator(pooled.dtype)
    dummy = fc_w
    affine = bn_w is not None
    u = pooled.new_empty(batch, width)
    h = pooled.new_empty(batch, width)
    gpu.hidden_fwd[(batch, cdiv(width, 32))](
        pooled, pixels, fc_w, mean, var,
        bn_w if affine else dummy, bn_b if affine else dummy, eps, u, h,
        channels, width, HAS_AFFINE=affine, BA=32, BC=128, ACC=acc)
    num_gates = layout.channel + layout.filter + layout.spatial + (
        layout.weights if layout.weights > 1 else 0)
    gates = pooled.new_empty(batch, num_gates)
    gpu.gates_fwd[(batch, _sigmoid_blocks(layout) + (layout.weights > 1))](
        h, *[dummy if t is None else t for t in heads], gates, width,
        layout.channel, layout.filter, layout.spatial, num_gates,
        temperature, NK=layout.weights, BJ=_HEAD_ROWS,
        BA=min(next_pow2(width), 128), ACC=acc)
    return u, h, gates


def _sigmoid_blocks(layout: FoldLayout) -> int:
    return cdiv(layout.channel + layout.filter + layout.spatial, _HEAD_ROWS)


def _layout(layer) -> FoldLayout:
    att = layer.attention
    spatial = getattr(att, 'spatial_fc', None)
    return FoldLayout(
        depthwise=layer.is_depthwise,
        channel=layer.in_channels,
        filter=layer.out_channels if hasattr(att, 'filter_fc') else 0,
        spatial=0 if spatial is None else spatial.out_channels,
        weights=layer.kernel_num,
        out_channels=layer.out_channels,
        in_per_group=layer.in_channels // layer.groups,
        taps=layer.kernel_size[0] * layer.kernel_size[1])


def applies(layer, x: Tensor) -> bool:
    """Whether :func:`odconv_weights` computes ``layer``'s weights for input
    ``x``: where :func:`~mmdyn.ops.dispatch.may_fuse` allows it (for the
    attention branch), the branch's BatchNorm uses running statistics
    (eval mode, as with ``norm_eval=True``), the layer is dense or
    depthwise with an attention branch and a bank the kernels take, and it
    needs per-sample weights (a spatial or kernel-wise attention) or the
    batch is small enough for that to pay
    (:func:`~mmdyn.ops.dispatch.folding_pays`)."""
    per_sample = layer.kernel_num > 1 or layer.kernel_size != (1, 1)
    return branch_fuses(layer, x) and (per_sample or folding_pays(x))


def branch_fuses(layer, x: Tensor) -> bool:
    """Whether the kernels compute ``layer``'s attention branch for input
    ``x``: :func:`~mmdyn.ops.dispatch.may_fuse` allows it, the branch's
    BatchNorm uses running statistics (eval mode), and the layer is dense
    or depthwise with a branch and a bank the kernels take."""
    att = layer.attention
    bn = att.bn
    return (isinstance(bn, BatchNormBase) and not bn.training
            and bn.running_mean is not None
            and (layer.groups == 1 or layer.is_depthwise)
            and att.fc.out_channels <= MAX_ATTENTION_CHANNELS
            and layer.kernel_num <= MAX_WEIGHTS
            and may_fuse(x, [layer.weight, att.fc.weight], [att]))


def odconv_attentions(
        layer, x: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """The channel (B, in), spatial (B, kh * kw) and filter (B, out)
    attentions of ``layer`` for input ``x`` (None where the layer has none).
    Where :func:`branch_fuses`, views of the gates the branch's kernels
    write side by side, in the dtype the op computes in (float32 under
    autocast); elsewhere the layer's own branch. Forward only: call where
    nothing needs a gradient."""
    att = layer.attention
    if not branch_fuses(layer, x):
        own = att(x, layer.temperature)
        return own.channel, own.spatial, own.filter
    bn = att.bn
    layout = _layout(layer)
    with outside_autocast(x):
        _, _, gates = _gates(
            layout, pixel_sums(x), x.shape[2] * x.shape[3],
            float(layer.temperature), att.fc.weight.contiguous(), bn.weight,
            bn.bias, bn.running_mean, bn.running_var, bn.eps, _heads(att))
    start = layout.channel + layout.filter
    return (gates[:, :layout.channel],
            gates[:, start:start + layout.spatial] if layout.spatial else None,
            gates[:, layout.channel:start] if layout.filter else None)


def _heads(att) -> list:
    """Weight and bias of each head (None, None where absent)."""
    heads = []
    for name in ('channel_fc', 'filter_fc', 'spatial_fc', 'kernel_fc'):
        head = getattr(att, name, None)
        heads += [None, None] if head is None else [head.weight.contiguous(),
                                                    head.bias]
    return heads


def odconv_weights(layer, x: Tensor) -> Tensor:
    """The per-sample weights (B, out, in / groups, kh, kw) of
    :class:`~mmdyn.layers.ODConv2d` ``layer`` for input ``x``, every
    attention folded in (Eq. 2), from :class:`FusedODConvWeights`; call
    where :func:`applies`."""
    att = layer.attention
    bn = att.bn
    heads = _heads(att)
    pooled = pixel_sums(x)  # in float32 under autocast: outside the block
    dtype = conv_dtype(x)
    with outside_autocast(x):
        return FusedODConvWeights.apply(
            _layout(layer), dtype, pooled, x.shape[2] * x.shape[3],
            float(layer.temperature), att.fc.weight.contiguous(), bn.weight,
            bn.bias, bn.running_mean, bn.running_var, bn.eps, *heads,
            layer.weight.contiguous())
