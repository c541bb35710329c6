"""A ReLU that also sums its output over the pixels, for the dynamic conv
after it.

ODConv's and DCD's attention branches start from the per-channel mean of
their input: one more pass over the activation forward (a reduction), and
one backward (the mean's gradient broadcast into the input's, an add over
the whole tensor). Where the input is a ReLU's output, both fit in the
ReLU's own pass: :func:`relu_then_sum` returns ``relu(x)`` and its sums
``(B, C)`` from one Triton kernel, the conv takes the sums
(``conv(y, input_sum)``, see :meth:`mmdyn.layers.DynamicConv2d.
takes_input_sum`), and the backward adds their gradient in the ReLU's.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .hooks import has_hooks
from .triton_support import accumulator, cdiv

#: Pixels a program takes per step, and programs enough to fill a GPU.
_BLOCK = 1024
_PROGRAMS = 2048


def _chunks(rows: int, pixels: int) -> Tuple[int, int]:
    """(pixels per program, programs per row): rows are split where there
    are too few of them to fill the GPU."""
    blocks = cdiv(pixels, _BLOCK)
    chunks = min(blocks, max(1, cdiv(_PROGRAMS, rows)))
    chunk = cdiv(blocks, chunks) * _BLOCK
    return chunk, cdiv(pixels, chunk)


class _ReLUThenSum(torch.autograd.Function):
    """Contiguous ``x`` (B, C, H, W) -> ``relu(x)`` (written over ``x`` if
    ``inplace``), its sums (B, C)."""

    @staticmethod
    def forward(ctx, x: Tensor, inplace: bool) -> Tuple[Tensor, Tensor]:
        from . import relu_sum_kernels as kernels
        batch, channels, height, width = x.shape
        rows, pixels = batch * channels, height * width
        chunk, chunks = _chunks(rows, pixels)
        if inplace:
            y = x
            ctx.mark_dirty(x)
        else:
            y = torch.empty_like(x)
        partial = x.new_empty(rows, chunks)
        kernels.relu_sum_fwd[(rows, chunks)](
            x, y, partial, pixels, chunk, chunks, BLOCK=_BLOCK,
            ACC=accumulator(x.dtype))
        sums = partial[:, 0] if chunks == 1 else partial.sum(1)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y)
        ctx.grid, ctx.chunk = (rows, chunks), chunk
        return y, sums.view(batch, channels)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Optional[Tensor],
                 grad_sum: Optional[Tensor]) -> Tensor:
        from . import relu_sum_kernels as kernels
        y, = ctx.saved_tensors
        grad_x = torch.empty_like(y)
        dummy = y
        kernels.relu_sum_bwd[ctx.grid](
            y, dummy if grad_y is None else grad_y.contiguous(),
            dummy if grad_sum is None else grad_sum.contiguous(), grad_x,
            y.shape[2] * y.shape[3], ctx.chunk,
            HAS_GRAD_Y=grad_y is not None,
            HAS_GRAD_SUM=grad_sum is not None, BLOCK=_BLOCK)
        return grad_x, None


def relu_then_sum(relu: nn.Module, x: Tensor,
                  conv: nn.Module) -> Tuple[Tensor, Optional[Tensor]]:
    """``relu(x)`` and, where ``conv`` (the layer it feeds) takes them for
    this input (``conv.takes_input_sum(x)``), its sums over the pixels
    (B, C) from the same pass; else ``(relu(x), None)``. ``relu`` is any
    activation module; only an ``nn.ReLU`` without hooks is fused, on a
    contiguous 4-d ``x``, and in place where the ReLU is."""
    takes = getattr(conv, 'takes_input_sum', None)
    if (takes is None or type(relu) is not nn.ReLU or has_hooks(relu)
            or x.dim() != 4 or not x.is_contiguous() or not takes(x)):
        return relu(x), None
    return _ReLUThenSum.apply(x, relu.inplace)
