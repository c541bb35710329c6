"""Per-sample 1x1 convolutions as batched matrix products, in the precision
of a convolution.

PyTorch lets float32 convolutions use TF32 tensor cores by default
(``torch.backends.cudnn.allow_tf32``) but not float32 matrix products
(``torch.backends.cuda.matmul.allow_tf32``). A dynamic layer that computes
its 1x1 convolution with ``torch.bmm`` would then run several times slower
than the ``nn.Conv2d`` it replaces (on an H100, up to 3x in forward and
backward) and round differently. :func:`pixelwise_matmul` computes it, and
its gradients, with the convolution setting instead.
"""
import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


@contextlib.contextmanager
def matmul_precision_of_convs() -> Iterator[None]:
    """Within the block, float32 CUDA matrix products use TF32 exactly when
    cuDNN convolutions do. The setting is process-wide while the block
    runs, and restored after it."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


def precision_differs(pixels: Tensor) -> bool:
    """Whether a float32 product on ``pixels`` would round differently from
    a convolution: CUDA, float32 outside autocast, the two TF32 settings
    different. Under ``torch.compile`` the compiler's own matmul precision
    applies (``torch.set_float32_matmul_precision``)."""
    return (pixels.is_cuda and pixels.dtype == torch.float32
            and torch.backends.cudnn.allow_tf32
            != torch.backends.cuda.matmul.allow_tf32
            and not torch.is_autocast_enabled(pixels.device.type)
            and not torch.compiler.is_compiling())


def _product(kernels: Tensor, pixels: Tensor,
             bias: Optional[Tensor]) -> Tensor:
    if bias is None:
        return torch.bmm(kernels, pixels)
    return torch.baddbmm(bias.unsqueeze(-1), kernels, pixels)


class _ConvPrecisionProduct(torch.autograd.Function):
    """``kernels @ pixels (+ bias)`` whose forward and backward products
    both run in the precision of convolutions."""

    @staticmethod
    def forward(ctx, kernels, pixels, bias):
        ctx.save_for_backward(kernels, pixels)
        with matmul_precision_of_convs():
            return _product(kernels, pixels, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        kernels, pixels = ctx.saved_tensors
        need_kernels, need_pixels, need_bias = ctx.needs_input_grad
        grad_kernels = grad_pixels = None
        with matmul_precision_of_convs():
            if need_kernels:
                grad_kernels = torch.bmm(grad, pixels.transpose(1, 2))
            if need_pixels:
                grad_pixels = torch.bmm(kernels.transpose(1, 2), grad)
        return grad_kernels, grad_pixels, grad.sum(2) if need_bias else None


def pixelwise_matmul(kernels: Tensor,
                     pixels: Tensor,
                     bias: Optional[Tensor] = None,
                     like_conv: Optional[bool] = None) -> Tensor:
    """A 1x1 convolution with one kernel per sample: ``kernels[b] @
    pixels[b] (+ bias[b])``.

    Args:
        kernels: (B, C_out, C_in).
        pixels: (B, C_in, P), the pixels of each sample as columns.
        bias: (B, C_out) or None.
        like_conv: Compute in the precision of convolutions (True), of
            matrix products (False) or the first where they differ (None,
            see :func:`precision_differs`).

    Returns:
        Tensor: (B, C_out, P).
    """
    if like_conv is None:
        like_conv = precision_differs(pixels)
    if like_conv:
        return _ConvPrecisionProduct.apply(kernels, pixels, bias)
    return _product(kernels, pixels, bias)
