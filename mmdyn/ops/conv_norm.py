"""A dynamic conv's per-sample bias added by the eval-mode BatchNorm after
it: ``norm(conv(x))`` in one pass over the conv's output fewer.

Where DCD's fused op folds a layer into per-sample weights (Eq. 4 of the
DCD paper), every sample also gets a bias, which the grouped convolution
adds in a pass of its own over the output. In eval mode the BatchNorm after
the conv is an affine map per channel, ``bn(v) = a * v + c``, so

    ``bn(out + b) = a * out + (a * b + c)``

is one pass over ``out``, the one a static conv's BatchNorm makes (the
measurement that kept it: ``docs/speed.md``). Autograd differentiates the
affine form: the
gradients reach ``out``, the bias and the BatchNorm's weight and bias as
they would through ``norm(conv(x))``.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .._compat import BatchNormBase, has_hooks
from . import scaled_weight_conv as scaled
from .per_sample_conv import Epilogue


def applies(conv: nn.Module, norm: nn.Module, x: Tensor) -> bool:
    """Whether :func:`conv_then_norm` hands ``norm`` the bias that ``conv``
    can leave (``forward_split_bias``): ``norm`` is a BatchNorm using
    running statistics (eval mode, as with ``norm_eval=True``) of ``x``'s
    dtype, autocast is off (under it the norm computes in float32 and
    returns autocast's dtype; the conv then adds the bias), and neither has
    hooks (both are computed without being called).
    Whether there is a bias to hand over, the fused op that makes it
    decides through :func:`~mmdyn.ops.dispatch.may_fuse`, once."""
    return (hasattr(conv, 'forward_split_bias') and x.dim() == 4
            and isinstance(norm, BatchNormBase) and not norm.training
            and norm.running_var is not None
            and norm.running_var.dtype == x.dtype
            and not torch.is_autocast_enabled(x.device.type)
            and not has_hooks([conv, norm]))


def conv_then_norm(conv: nn.Module, norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(conv(x))``; where :func:`applies`, with the per-sample bias
    that ``conv.forward_split_bias`` leaves added by ``norm``."""
    if not applies(conv, norm, x):
        return norm(conv(x))
    out, bias = conv.forward_split_bias(x)
    if bias is None:
        return norm(out)
    scale, shift = norm_affine(norm)
    return torch.addcmul(torch.addcmul(shift, bias, scale)[:, :, None, None],
                         out, scale[:, None, None])


def norm_affine(norm: nn.Module) -> Tuple[Tensor, Tensor]:
    """Scale and shift of an eval-mode BatchNorm, ``norm(v) = v * s + h``
    per channel, from its running statistics."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    return scale, shift if norm.bias is None else shift + norm.bias


def conv_norm_act(conv: nn.Module, norm: nn.Module, x: Tensor,
                  residual: Optional[Tensor] = None,
                  act: Optional[nn.Module] = None) -> Tensor:
    """``act(norm(conv(x)) + residual)`` (no residual, no ``act`` where
    None; ``act`` a ReLU): a block's conv and the operations after it.
    Where the conv is ODConv (1x) computed by its inference kernel
    (:mod:`.scaled_weight_conv`) and ``norm`` a BatchNorm with running
    statistics in eval mode, the kernel applies the norm as its affine map,
    adds the residual and applies the ReLU as it writes the conv's output,
    instead of each making a pass of its own over it."""
    if _epilogue_applies(conv, norm, act, x):
        scale, shift = norm_affine(norm)
        return scaled.layer_forward(conv, x, Epilogue(
            scale, shift, residual, relu=act is not None))
    out = conv_then_norm(conv, norm, x)
    if residual is not None:
        out = out + residual
    return out if act is None else act(out)


def _epilogue_applies(conv: nn.Module, norm: nn.Module,
                      act: Optional[nn.Module], x: Tensor) -> bool:
    from ..layers.odconv import ODConv2d
    return (isinstance(conv, ODConv2d) and scaled.applies(conv, x)
            and isinstance(norm, BatchNormBase) and not norm.training
            and norm.running_var is not None
            and (act is None or isinstance(act, nn.ReLU))
            and not has_hooks([conv, norm] + ([] if act is None else [act])))
