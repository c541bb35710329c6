"""A convolution with one weight per sample, as a fused op: what
:func:`mmdyn.layers.functional.per_sample_conv2d` computes with cuDNN's
grouped convolution (the batch folded into its groups), as three Triton
implicit-GEMM kernels (:mod:`mmdyn.ops.per_sample_conv_kernels`): output,
input gradient, weight gradient.

Each kernel multiplies one sample's pixels by that sample's own weights,
gathering each tap by index: a 1x1 layer reads its operands in their own
layout (NCHW or channels-last), a layer with more taps (or a stride, or
padding) from channels-last copies, where the gathered pixels' channels are
adjacent. cuDNN's grouped conv runs one group per sample, and with
hundreds of samples (the papers' ImageNet protocol, batch 200) it is several
times slower than the dense conv of the same work; at a detector's few
images per GPU it is faster than these kernels (``docs/speed.md``).

So the op takes dense layers (``groups == 1``) at batches above
:data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`; at smaller batches every dense
layer of a mixed-precision training step (from two images), where cuDNN's
grouped conv computes its half-precision weight gradient slowly, and
otherwise (more images than :mod:`.block_diagonal_conv` takes) the
pointwise (1x1) layers over large feature maps
(:data:`MIN_POINTWISE_PIXELS`), where cuDNN's grouped conv converts between
memory layouts around a product that the op computes in place; in
float32 (TF32 where PyTorch allows it for convolutions,
``torch.backends.cudnn.allow_tf32``, as for the conv it stands in for) and,
under autocast, in float16 or bfloat16 with float32 accumulation; in
Triton's CPU interpreter also in float64, which is how the tests hold it
to the reference formulation.
"""
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..layers.functional import accumulation_dtype, conv_output_size
from . import pixel_sums
from .block_diagonal_conv import BATCH as BLOCK_DIAGONAL_BATCH
from .dispatch import (as_conv_operands, conv_dtype, folding_pays,
                       may_fuse, outside_autocast)
from .triton_utils import accumulator, cdiv, next_pow2

#: The weight gradient is split over the pixels into parts until the
#: kernel has about this many programs (two per streaming multiprocessor
#: of an H100 and an H200), so that small batches fill the GPU.
_MIN_PROGRAMS = 264
#: From three up to :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH` images,
#: outside autocast, the op is the faster one for a 1x1 layer whose output
#: has at least this many pixels (``docs/speed.md``), e.g. a ResNet's first
#: two stages at a detector's 800x1333 input.
MIN_POINTWISE_PIXELS = 128 * 128


class Geometry(NamedTuple):
    """A layer's geometry, as ``F.conv2d`` takes it."""
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]

    def kernel_args(self) -> Tuple[int, ...]:
        """SH, SW, PH, PW, DH, DW, as the kernels take them."""
        return (*self.stride, *self.padding, *self.dilation)


def applies(layer, x: Tensor, weight: Tensor,
            bias: Optional[Tensor]) -> bool:
    """Whether :func:`per_sample_conv` convolves ``x`` (B, C, H, W) with
    ``weight`` (B, CO, C, kh, kw) for ``layer``: a dense layer
    (``groups == 1``) where the op is the faster one (:func:`_pays`) and
    :func:`~mmdyn.ops.dispatch.may_fuse` allows a fused op, on a GPU in
    float32, or under autocast in its float16 or bfloat16 (in the CPU
    interpreter, which may_fuse allows only in mode ``'always'``, float64
    too, and no bfloat16)."""
    # may_fuse first: it refuses while a model is traced or exported, before
    # a test of the batch size would fix it in the traced graph
    if layer.groups != 1 or not may_fuse(x, (), ()) or \
            not _pays(layer, x, weight):
        return False
    return kernels_take(x, [weight, bias])


def kernels_take(x: Tensor, tensors) -> bool:
    """Whether the kernels compute for input ``x`` and ``tensors`` (None
    where absent): under autocast in its float16 or bfloat16 (not bfloat16
    in the interpreter), otherwise where all share ``x``'s dtype, float32
    (in the interpreter also float64)."""
    tensors = [x] + [t for t in tensors if t is not None]
    in_interpreter = not x.is_cuda
    dtype = conv_dtype(x)
    if dtype is not None:  # under autocast
        # Triton's CPU interpreter multiplies bfloat16 tiles wrongly
        return dtype == torch.float16 or (dtype == torch.bfloat16
                                          and not in_interpreter)
    dtypes = (torch.float32, torch.float64) if in_interpreter else \
        (torch.float32, )
    return all(t.dtype == x.dtype for t in tensors) and x.dtype in dtypes


def _pays(layer, x: Tensor, weight: Tensor) -> bool:
    """Whether the op is faster than cuDNN's grouped conv for this layer and
    input (``docs/speed.md``):

    - at every batch above :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH` (the
      grouped conv slows down with its group count);
    - below it, in a mixed-precision training step (autocast, and the
      weights need a gradient), from two images: cuDNN computes a grouped
      conv's half-precision weight gradient with a generic kernel, several
      times slower than the op's;
    - below it otherwise, with more images than :mod:`.block_diagonal_conv`
      takes, on a 1x1 layer with at least :data:`MIN_POINTWISE_PIXELS`
      output pixels.
    """
    if not folding_pays(x):
        return True
    if torch.is_autocast_enabled(x.device.type):
        return x.shape[0] > 1 and weight.requires_grad and \
            torch.is_grad_enabled()
    if x.shape[0] <= BLOCK_DIAGONAL_BATCH or weight.shape[-2:] != (1, 1):
        return False
    out_h, out_w = conv_output_size(x, weight, layer.stride, layer.padding,
                                    layer.dilation)
    return out_h * out_w >= MIN_POINTWISE_PIXELS


def per_sample_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                    geometry: Geometry,
                    epilogue: Optional['Epilogue'] = None) -> Tensor:
    """``out[b] = F.conv2d(x[b], weight[b], bias[b], *geometry)`` for every
    sample ``b``, then the ``epilogue`` where given (forward only: where
    nothing needs a gradient); call where :func:`applies`. Under autocast
    the three are cast to autocast's dtype first, as autocast casts a
    conv's operands."""
    x, weight, bias = as_conv_operands(x, weight, bias)
    with outside_autocast(x):
        if epilogue is not None:
            return conv_forward(x, weight, geometry, bias=bias,
                                epilogue=epilogue)
        return PerSampleConv.apply(x, weight, bias, geometry)


def _tiles(dtype: torch.dtype, rows: int, cols: int) -> dict:
    """Tile sizes and warps of a (rows x cols) output tile's kernel."""
    if dtype == torch.float64:  # the interpreter only
        return dict(BM=32, BN=32, BK=16, num_warps=4)
    rows = 128 if rows >= 128 else 64
    cols = 128 if cols >= 128 else 64
    return dict(BM=rows, BN=cols, BK=32 if dtype == torch.float32 else 64,
                num_warps=8 if rows * cols >= 128 * 128 else 4,
                num_stages=3)


def empty_like_layout(x: Tensor, shape) -> Tensor:
    """An empty tensor of ``shape`` in ``x``'s memory format."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous()
    return torch.empty(shape, dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last
                       else torch.contiguous_format)


class Epilogue(NamedTuple):
    """The block's operations after a conv, applied as the kernel writes
    the conv's output: ``relu(norm_scale * y + norm_shift + residual)``,
    capped at ``relu_cap`` (ReLU6: 6.0), each part only where given (None;
    ``relu`` False). With ``keep_sums``, the kernel also keeps the sums of
    the output over each channel's pixels, for the attention of the layer
    that reads it next (:mod:`.pixel_sums`)."""
    norm_scale: Optional[Tensor] = None  # (CO,): an eval-mode norm's scale
    norm_shift: Optional[Tensor] = None  # (CO,): and shift
    residual: Optional[Tensor] = None  # (B, CO, OH, OW), rows dense
    relu: bool = False
    relu_cap: Optional[float] = None
    keep_sums: bool = False


class LowRank(NamedTuple):
    """A residual through an L-dimensional latent space on the centre tap
    of the filter, ``P (M_b z + c_b)`` with ``z = Q x``: DCD's ``P Phi(x)
    Q^T`` (Eq. 4 of the DCD paper) with its BatchNorms folded in."""
    q: Tensor  # (L, C)
    m: Tensor  # (B, L, L)
    c: Tensor  # (B, L)
    p: Tensor  # (CO, L)


def conv_forward(x: Tensor, weights: Tensor, geometry: Geometry, *,
                 shared: bool = False, channel: Optional[Tensor] = None,
                 spatial: Optional[Tensor] = None,
                 filter: Optional[Tensor] = None,
                 bias: Optional[Tensor] = None,
                 low_rank: Optional[LowRank] = None,
                 epilogue: Epilogue = Epilogue()) -> Tensor:
    """The forward kernel's output, in ``x``'s dtype and memory format.

    ``weights`` are (B, CO, C, kh, kw), one per sample, or with ``shared``
    (CO, C, kh, kw), the same for every sample. ``channel`` (B, C) and
    ``spatial`` (B, kh * kw) scale each sample's weights, ``filter`` (B,
    CO) its output, to which the ``low_rank`` residual and ``bias`` (B, CO)
    are then added (ODConv's Eq. 2 with one weight; DCD's Eq. 4), before
    the ``epilogue`` (the block's norm, residual and ReLU). The
    kernel scales each weight tile as it multiplies, so no scaled weight is
    written out.
    """
    from . import per_sample_conv_kernels as kernels
    weights = _tile_layout(weights)
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weights.shape[-4:]
    out_h, out_w = conv_output_size(x, weights, *geometry)
    y = empty_like_layout(x, (batch, out_channels, out_h, out_w))
    x, flat = _as_kernels_read(x, (kh, kw), geometry)
    tiles = _tiles(x.dtype, out_h * out_w, out_channels)
    grid = (cdiv(out_h * out_w, tiles['BM']), cdiv(out_channels, tiles['BN']),
            batch)
    attentions = [None if t is None else rows_contiguous(t)
                  for t in (channel, spatial, filter)]
    terms = attentions + [None if t is None else t.contiguous()
                          for t in (bias, ) +
                          (low_rank or LowRank(None, None, None, None))]
    latent = 0 if low_rank is None else low_rank.q.shape[0]
    after = epilogue_operands(epilogue, y, grid[0])
    kernels.conv_fwd[grid](
        x, weights, *[weights if t is None else t for t in terms],
        *after.tensors, channels, height, width, out_channels, out_h, out_w,
        out_h * out_w, latent, *x.stride(), 0 if shared else weights.stride(0),
        *weights.stride()[-4:-2], weights.stride(-1), *pixel_strides(y),
        *after.residual_strides,
        *[0 if t is None else t.stride(0) for t in attentions],
        *geometry.kernel_args(), KW=kw, TAPS=kh * kw, FLAT=flat,
        HAS_CHAN=channel is not None,
        HAS_TAP=spatial is not None, HAS_FILT=filter is not None,
        HAS_BIAS=bias is not None, LOW_RANK=low_rank is not None,
        LP=max(16, next_pow2(latent)), TC=(kh - 1) // 2 * kw + (kw - 1) // 2,
        TF32=_tf32(x), ACC=accumulator(x.dtype), **after.flags, **tiles)
    after.keep_sums(y)
    return y


def rows_contiguous(t: Tensor) -> Tensor:
    """``t`` (B, N) with each row contiguous (a copy where not): the
    kernels address its rows by their stride."""
    return t if t.stride(-1) == 1 else t.contiguous()


class EpilogueOperands(NamedTuple):
    """An :class:`Epilogue` as a forward kernel takes it (see
    :func:`epilogue_operands`)."""
    tensors: tuple  # norm_s, norm_h, res, y, sums: the kernel's pointers
    residual_strides: Tuple[int, int, int]
    flags: dict  # HAS_NORM, HAS_RES, RELU, RELU_CAP, SUMS
    sums: Optional[Tensor]

    def keep_sums(self, y: Tensor) -> None:
        """Keep the sums the kernel took of ``y`` (:mod:`.pixel_sums`)."""
        if self.sums is not None:
            pixel_sums.keep(y, self.sums)


def epilogue_operands(epilogue: Epilogue, y: Tensor,
                      pixel_tiles: int) -> EpilogueOperands:
    """The pointers, strides and flags of ``epilogue`` for a forward kernel
    writing ``y`` (B, CO, OH, OW) in ``pixel_tiles`` tiles along the
    pixels: the norm's scale and shift (contiguous), the residual (rows
    dense; a channels-last copy where not), ``y``, and where the sums are
    kept a (B, pixel_tiles, CO) tensor for them, in the dtype sums are
    taken in; ``y`` stands for each absent tensor."""
    norm = [None if t is None else t.contiguous()
            for t in (epilogue.norm_scale, epilogue.norm_shift)]
    residual = epilogue.residual
    if residual is not None and not _rows_dense(residual):
        residual = residual.contiguous(memory_format=torch.channels_last)
    sums = torch.empty((y.shape[0], pixel_tiles, y.shape[1]),
                       device=y.device, dtype=accumulation_dtype(y.dtype)) \
        if epilogue.keep_sums else None
    tensors = tuple(y if t is None else t
                    for t in (*norm, residual, y, sums))
    return EpilogueOperands(
        tensors, pixel_strides(y if residual is None else residual),
        dict(HAS_NORM=norm[0] is not None, HAS_RES=residual is not None,
             RELU=epilogue.relu, RELU_CAP=float(epilogue.relu_cap or 0),
             SUMS=sums is not None), sums)


def _tile_layout(weights: Tensor) -> Tensor:
    """``weights`` (..., CO, C, kh, kw) laid out for the kernels' tiles:
    channels-last, each output channel's (kh, kw, C), so that a tile's
    input channels are adjacent in memory (in NCHW, each is kh * kw
    elements from the next)."""
    if weights.dim() == 4:
        return weights.contiguous(memory_format=torch.channels_last)
    if _is_channels_last_5d(weights):
        return weights
    return _channels_last_5d(weights.shape, weights.device,
                             weights.dtype).copy_(weights)


def _channels_last_5d(shape, device, dtype) -> Tensor:
    """An empty (..., CO, C, kh, kw) tensor laid out as (..., CO, kh, kw,
    C)."""
    *lead, out_channels, channels, kh, kw = shape
    return torch.empty((*lead, out_channels, kh, kw, channels),
                       device=device, dtype=dtype).movedim(-1, -3)


def _is_channels_last_5d(weights: Tensor) -> bool:
    """Whether ``weights`` (..., CO, C, kh, kw) are laid out as
    :func:`_channels_last_5d` makes them (for 1x1 weights, contiguous ones
    are: the strides of dimensions of size 1 do not matter)."""
    return weights.movedim(-3, -1).is_contiguous()


def _reads_own_pixel(kernel_size, geometry: Geometry) -> bool:
    """Whether each output pixel of the conv reads the input pixel at its
    own place, and only it (a 1x1 filter, stride 1, no padding)."""
    return tuple(kernel_size) == (1, 1) and \
        tuple(geometry.stride) == (1, 1) and tuple(geometry.padding) == (0, 0)


def _rows_dense(t: Tensor) -> bool:
    """Whether the rows of ``t``'s (..., H, W) maps are W pixels apart (as
    in NCHW and channels-last tensors), so that the kernels may address
    pixel ``h * W + w`` as one flat index."""
    return t.shape[-2] == 1 or t.stride(-2) == t.shape[-1] * t.stride(-1)


def _as_kernels_read(t: Tensor, kernel_size,
                     geometry: Geometry) -> Tuple[Tensor, bool]:
    """``t`` (B, C, H, W), the input of a conv or its output's gradient, as
    the kernels read it, and whether they address its pixels by one flat
    index (their ``FLAT``): in place where each output pixel reads the
    input pixel at its own place (:func:`_reads_own_pixel`) and ``t``'s
    rows are dense; otherwise channels-last (a copy where ``t`` is not),
    since pixels scattered by a tap are read as vectors only along the
    channels, which are adjacent in that layout."""
    if _reads_own_pixel(kernel_size, geometry) and _rows_dense(t):
        return t, True
    return t.contiguous(memory_format=torch.channels_last), False


def pixel_strides(t: Tensor) -> Tuple[int, int, int]:
    """Sample, channel and flat-pixel strides of a (B, C, H, W) tensor whose
    rows are dense (:func:`_rows_dense`)."""
    return t.stride(0), t.stride(1), t.stride(3)


def _tf32(x: Tensor) -> bool:
    """Whether float32 products go through TF32: where PyTorch allows it
    for convolutions, as for the conv the kernels stand in for."""
    return x.dtype == torch.float32 and torch.backends.cudnn.allow_tf32


class PerSampleConv(torch.autograd.Function):
    """:func:`per_sample_conv` forward and backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                geometry: Geometry) -> Tensor:
        weight = _tile_layout(weight)
        y = conv_forward(x, weight, geometry, bias=bias)
        ctx.save_for_backward(x, weight)
        ctx.geometry = geometry
        ctx.tf32 = _tf32(x)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        from . import per_sample_conv_kernels as kernels
        x, weight = ctx.saved_tensors
        g = ctx.geometry
        batch, channels, height, width = x.shape
        out_channels, _, kh, kw = weight.shape[1:]
        out_h, out_w = grad_y.shape[-2:]
        taps = kh * kw
        acc = accumulator(x.dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            gy, flat = _as_kernels_read(grad_y, (kh, kw), g)
            grad_x = empty_like_layout(x, x.shape)
            tiles = _tiles(x.dtype, height * width, channels)
            grid = (cdiv(height * width, tiles['BM']),
                    cdiv(channels, tiles['BN']), batch)
            kernels.conv_bwd_input[grid](
                gy, weight, grad_x, channels, height, width,
                out_channels, out_h, out_w, height * width, *gy.stride(),
                *weight.stride()[:3], weight.stride(-1),
                *pixel_strides(grad_x), *g.kernel_args(),
                KW=kw, TAPS=taps, FLAT=flat, TF32=ctx.tf32, ACC=acc,
                **tiles)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(kernels, grad_y, x, weight.shape, g,
                                  ctx.tf32, acc)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_y.sum(dim=(2, 3),
                                dtype=accumulation_dtype(x.dtype)).to(x.dtype)
        return grad_x, grad_w, grad_b, None


def _weight_grad(kernels, grad_y: Tensor, x: Tensor, shape, g: Geometry,
                 tf32: bool, acc) -> Tensor:
    """The weight gradient (B, CO, C, kh, kw): each program sums one part of
    the output pixels, and the parts are added in a fixed order."""
    batch, out_channels, channels, kh, kw = shape
    height, width = x.shape[-2:]
    out_h, out_w = grad_y.shape[-2:]
    if not _rows_dense(grad_y):
        grad_y = grad_y.contiguous()
    x, flat = _as_kernels_read(x, (kh, kw), g)
    tiles = _tiles(x.dtype, out_channels, channels)
    blocks = cdiv(out_h * out_w, tiles['BK'])
    programs = (cdiv(out_channels, tiles['BM']) *
                cdiv(channels, tiles['BN']) * kh * kw * batch)
    parts = max(1, min(blocks, cdiv(_MIN_PROGRAMS, programs)))
    per_part = cdiv(blocks, parts)
    parts = cdiv(blocks, per_part)
    sums = _channels_last_5d((parts, ) + tuple(shape), x.device,
                             accumulation_dtype(x.dtype))
    grid = (cdiv(out_channels, tiles['BM']) * cdiv(channels, tiles['BN']),
            kh * kw, batch * parts)
    kernels.conv_bwd_weights[grid](
        grad_y, x, sums, channels, height, width, out_channels, out_h, out_w,
        out_h * out_w, *pixel_strides(grad_y), *x.stride(), sums.stride(2),
        sums.stride(3), sums.stride(-1), *g.kernel_args(), batch, per_part,
        KW=kw, TAPS=kh * kw, FLAT=flat, TF32=tf32, ACC=acc, **tiles)
    return (sums[0] if parts == 1 else sums.sum(dim=0)).to(x.dtype)
