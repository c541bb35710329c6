"""A dynamic depthwise layer at inference at a large batch: each sample's
own weights applied, and the block's operations after the conv, in one
Triton kernel (:mod:`mmdyn.ops.depthwise_conv_kernels`).

At a large batch the per-sample weights of a depthwise layer (MobileNetV2's
3x3 with ODConv, DyConv or CondConv) are applied by a conv with the batch
folded into its groups, one group per sample and channel, which reads an
NCHW copy of a channels-last input and writes NCHW; the block's
BatchNorm and ReLU6 then each make a pass of their own, and the next
layer's attention one more to pool. The kernel here reads the input in its
own layout, adds up the taps with the sample's weights, and applies the
norm, the residual and the activation as it writes the output, keeping its
pixel sums for the next layer's pool (:mod:`.pixel_sums`).

Forward only: :func:`mmdyn.ops.conv_norm.conv_norm_act` hands it a block's
depthwise conv where nothing needs a gradient.
"""
from typing import Optional

from torch import Tensor

from ..layers.functional import conv_output_size
from .dispatch import (as_conv_operands, folding_pays, may_fuse,
                       needs_grad, outside_autocast)
from .odconv_weights import odconv_attentions
from .per_sample_conv import (Epilogue, Geometry, empty_like_layout,
                              epilogue_operands, kernels_take, pixel_strides,
                              rows_contiguous)
from .triton_utils import accumulator, cdiv


def applies(layer, x: Tensor, weight: Tensor,
            bias: Optional[Tensor]) -> bool:
    """Whether :func:`depthwise_conv` convolves ``x`` with ``weight`` (B, C,
    1, kh, kw) for ``layer``: a depthwise layer, a batch above
    :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`, no gradient wanted of the
    output, :func:`~mmdyn.ops.dispatch.may_fuse` allows a fused op, and the
    kernels take the dtypes (:func:`~.per_sample_conv.kernels_take`)."""
    # may_fuse first: it refuses while a model is traced or exported, before
    # a test of the batch size would fix it in the traced graph
    if not layer.is_depthwise or not may_fuse(x, (), ()) or \
            folding_pays(x) or needs_grad(layer, x):
        return False
    return kernels_take(x, [weight, bias])


def odconv_applies(layer, x: Tensor) -> bool:
    """Whether :func:`odconv_forward` computes ODConv ``layer``'s output
    for input ``x``: a depthwise layer with one weight, where
    :func:`applies` holds for its weight."""
    return layer.kernel_num == 1 and applies(layer, x, layer.weight, None)


def odconv_forward(layer, x: Tensor,
                   epilogue: Epilogue = Epilogue()) -> Tensor:
    """The output of depthwise ODConv (1x) ``layer`` for input ``x``, then
    the ``epilogue``: Eq. 2 of the ODConv paper with one weight and no
    filter attention (a depthwise layer has none), its channel and
    spatial attentions applied to the one weight as the kernel reads it, so
    that no per-sample weight is written. Call where
    :func:`odconv_applies`."""
    channel, spatial, _ = odconv_attentions(layer, x)
    return depthwise_conv(
        x, layer.weight[0], layer._per_sample_bias(x.shape[0]),
        Geometry(layer.stride, layer.padding, layer.dilation), epilogue,
        channel=channel, spatial=spatial)


def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                   geometry: Geometry, epilogue: Epilogue = Epilogue(), *,
                   channel: Optional[Tensor] = None,
                   spatial: Optional[Tensor] = None) -> Tensor:
    """``out[b] = F.conv2d(x[b], weight[b], bias[b], *geometry, groups=C)``
    for every sample ``b``, then the ``epilogue``, in ``x``'s dtype and
    memory format; call where :func:`applies`. ``weight`` is (B, C, 1, kh,
    kw), one per sample, or (C, 1, kh, kw) shared by the samples and scaled
    per sample by ``channel`` (B, C) and ``spatial`` (B, kh * kw) (None:
    not scaled). Under autocast ``x``, ``weight`` and ``bias`` are cast to
    autocast's dtype first, as autocast casts a conv's operands."""
    from . import depthwise_conv_kernels as kernels
    x, weight, bias = as_conv_operands(x, weight, bias)
    batch, channels, height, width = x.shape
    kh, kw = weight.shape[-2:]
    out_h, out_w = conv_output_size(x, weight, *geometry)
    y = empty_like_layout(x, (batch, channels, out_h, out_w))
    shared = weight.dim() == 4
    weights = weight.reshape(1 if shared else batch, channels, kh * kw)
    if weights.stride(-1) != 1:
        weights = weights.contiguous()
    scales = [None if t is None else rows_contiguous(t)
              for t in (channel, spatial)]
    block_pixels, block_channels = _tiles(x, out_h * out_w)
    grid = (cdiv(out_h * out_w, block_pixels), cdiv(channels, block_channels),
            batch)
    after = epilogue_operands(epilogue, y, grid[0])
    with outside_autocast(x):
        kernels.depthwise_fwd[grid](
            x, weights, *[weights if t is None else t for t in scales],
            weights if bias is None else bias.contiguous(),
            *after.tensors, channels, height, width, out_h, out_w,
            out_h * out_w, *x.stride(), 0 if shared else weights.stride(0),
            weights.stride(1), *pixel_strides(y), *after.residual_strides,
            *[0 if t is None else t.stride(0) for t in scales],
            *geometry.kernel_args(), KW=kw, TAPS=kh * kw,
            HAS_CHAN=channel is not None, HAS_TAP=spatial is not None,
            HAS_BIAS=bias is not None, ACC=accumulator(x.dtype),
            BP=block_pixels, BC=block_channels, num_warps=4, **after.flags)
    after.keep_sums(y)
    return y


def _tiles(x: Tensor, pixels: int):
    """(pixels, channels) of a tile: along the channels where they are
    adjacent (channels-last), along the pixels otherwise."""
    if x.stride(1) == 1:
        return min(64, max(16, 1 << (pixels - 1).bit_length())), 64
    return 128, 16
