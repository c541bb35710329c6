"""A dynamic conv's per-sample bias added by the BatchNorm after it.

Folded DCD (Eq. 4 of the DCD paper, BatchNorms in eval mode) gives every
sample a kernel and a bias; adding the bias is a pass over the conv's
output (a broadcast copy before a batched matrix product, or an add after
cuDNN's convolution), and the BatchNorm after the conv is another. In eval
mode the BatchNorm is an affine map per channel, ``bn(v) = a * v + c``, and

    ``bn(out + b) = a * out + (a * b + c)``

is one pass over ``out``, the one a static conv's BatchNorm makes:
:func:`conv_then_norm`. The backward is the BatchNorm's own on ``out``, plus
the terms of the bias (:class:`_BiasedEvalBatchNorm`).
"""
from typing import Optional

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from .functional import batch_norm_affine
from .hooks import has_hooks
from .side_stream import SideStream


class _BiasedEvalBatchNorm(torch.autograd.Function):
    """``bn(out + bias[:, :, None, None])`` for an eval-mode BatchNorm
    ``bn`` given as its affine map (``scale``, ``shift``) and ``invstd``,
    computed without gradients; the gradients go to ``out``, ``bias`` and
    the norm's ``weight`` and ``norm_bias``."""

    @staticmethod
    def forward(ctx, out: Tensor, bias: Tensor, invstd: Tensor,
                scale: Tensor, shift: Tensor, weight: Optional[Tensor],
                norm_bias: Optional[Tensor], mean: Tensor, var: Tensor,
                eps: float) -> Tensor:
        ctx.eps = eps
        ctx.save_for_backward(out, bias, invstd, scale, weight, mean, var)
        sample_shift = torch.addcmul(shift, bias, scale)
        return torch.addcmul(sample_shift[:, :, None, None], out,
                             scale[:, None, None])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        out, bias, invstd, scale, weight, mean, var = ctx.saved_tensors
        need = ctx.needs_input_grad
        need_weight = need[5] and weight is not None
        need_norm_bias = need[6]
        # the BatchNorm's backward on ``out``, as autograd runs it for an
        # eval-mode BatchNorm (no saved batch statistics: empty tensors);
        # the bias moves each sample's normalised values by
        # ``bias / sqrt(var + eps)``, which adds
        # sum_hw(grad) * bias / sqrt(var + eps) to the weight's gradient
        no_stats = mean.new_empty(0)
        grad_out, grad_weight, grad_norm_bias = \
            torch.ops.aten.native_batch_norm_backward(
                grad, out, weight, mean, var, no_stats, no_stats, False,
                ctx.eps, [need[0], need_weight, need_norm_bias])
        grad_bias = None
        if need[1] or need_weight:
            per_sample = grad.sum(dim=(2, 3))
            if need[1]:
                grad_bias = per_sample * scale
            if need_weight:
                grad_weight = torch.addcmul(grad_weight,
                                            (per_sample * bias).sum(0),
                                            invstd)
        return (grad_out, grad_bias, None, None, None, grad_weight,
                grad_norm_bias, None, None, None)


def takes_bias(norm: nn.Module, x: Tensor) -> bool:
    """Whether ``norm`` can add a conv's per-sample bias for input ``x``
    (N, C, H, W): a BatchNorm in eval mode with running statistics and
    without hooks, in float32 or float64 (a BatchNorm computes half inputs
    in float32) outside autocast, ``torch.compile`` and tracing."""
    return (x.dim() == 4 and x.dtype in (torch.float32, torch.float64)
            and isinstance(norm, _BatchNorm)
            and not norm.training
            and norm.running_var is not None and not has_hooks(norm)
            and not torch.is_autocast_enabled(x.device.type)
            and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing())


def conv_then_norm(conv: nn.Module, norm: nn.Module, x: Tensor,
                   input_sum: Optional[Tensor] = None) -> Tensor:
    """``norm(conv(x))``, with a per-sample bias that ``conv`` leaves
    (``conv.forward_split_bias``, e.g. folded DCD) added inside an eval-mode
    BatchNorm ``norm`` (:func:`takes_bias`): one pass over the conv's output
    fewer. Any other conv or norm, or one with hooks, is simply called.
    ``input_sum``, ``x``'s sums over its pixels where ``conv`` takes them
    (:func:`mmdyn.layers.relu_then_sum.relu_then_sum`), is passed on."""
    inputs = (x, ) if input_sum is None else (x, input_sum)
    split = getattr(conv, 'forward_split_bias', None)
    if split is None or has_hooks(conv) or not takes_bias(norm, x):
        return norm(conv(*inputs))
    # the norm's affine map needs the parameters alone: it is computed on
    # a side stream while the conv runs
    side = SideStream(x.device)
    with side, torch.no_grad():
        invstd = torch.rsqrt(norm.running_var + norm.eps)
        scale, shift = batch_norm_affine(norm, invstd)
    out, bias = split(*inputs)
    invstd, scale, shift = side.join((invstd, scale, shift))
    if bias is None:
        return norm(out)
    return _BiasedEvalBatchNorm.apply(out, bias, invstd, scale, shift,
                                      norm.weight, norm.bias,
                                      norm.running_mean, norm.running_var,
                                      norm.eps)
