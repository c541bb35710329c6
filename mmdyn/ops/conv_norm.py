"""A block's conv and the operations after it (its eval-mode BatchNorm,
the residual, a ReLU) with fewer passes over the conv's output.

Where DCD's fused op folds a layer into per-sample weights (Eq. 4 of the
DCD paper), every sample also gets a bias, which the grouped convolution
adds in a pass of its own over the output. In eval mode the BatchNorm after
the conv is an affine map per channel, ``bn(v) = a * v + c``, so

    ``bn(out + b) = a * out + (a * b + c)``

is one pass over ``out``, the one a static conv's BatchNorm makes
(:func:`conv_then_norm`; the measurement that kept it: ``docs/speed.md``).
Autograd differentiates the affine form: the gradients reach ``out``, the
bias and the BatchNorm's weight and bias as they would through
``norm(conv(x))``.

At inference at a large batch, where the per-sample conv's forward kernel
(or, for a depthwise layer, :mod:`.depthwise_conv`'s) computes the layer,
the same affine map, the residual and the ReLU are applied by that kernel
as it writes the output (:func:`conv_norm_act`): none of them makes a pass
of its own, and the kernel keeps the output's pixel sums for the next
layer's attention (:mod:`.pixel_sums`).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .._compat import BatchNormBase, has_hooks
from . import depthwise_conv as depthwise
from . import per_sample_conv as per_sample
from . import scaled_weight_conv as scaled
from .dispatch import folding_pays, needs_grad
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
    None; ``act`` a ReLU or ReLU6): a block's conv and the operations after it.

    At inference at a large batch (above
    :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`, nothing needs a gradient),
    where the conv's output comes from the per-sample conv's forward kernel
    (ODConv (1x) through :mod:`.scaled_weight_conv`, DCD through
    :mod:`.dcd_conv`, a layer with per-sample weights through
    :mod:`.per_sample_conv`, or :mod:`.depthwise_conv` where it is
    depthwise) and ``norm`` is a BatchNorm in eval mode, the kernel applies
    the norm as its affine map, adds the residual and applies the
    activation as it writes the conv's output, instead of each making a
    pass of its own over it, and keeps the output's pixel sums for the
    next layer's attention (:mod:`.pixel_sums`)."""
    from ..layers import DCDConv2d, ODConv2d
    from . import dcd_conv as low_rank
    if _epilogue_applies(conv, norm, x, residual, act):
        epilogue = Epilogue(*norm_affine(norm), residual,
                            relu=act is not None,
                            relu_cap=6.0 if type(act) is nn.ReLU6 else None,
                            keep_sums=True)
        if isinstance(conv, ODConv2d) and scaled.applies(conv, x):
            return scaled.layer_forward(conv, x, epilogue)
        if isinstance(conv, DCDConv2d) and low_rank.applies(conv, x):
            return low_rank.dcd_conv(conv, x, epilogue)
        if isinstance(conv, ODConv2d) and depthwise.odconv_applies(conv, x):
            return depthwise.odconv_forward(conv, x, epilogue)
        folded = conv.per_sample_weights(x)
        if folded is not None:
            weight, bias = folded
            geometry = per_sample.Geometry(conv.stride, conv.padding,
                                           conv.dilation)
            if per_sample.applies(conv, x, weight, bias):
                return per_sample.per_sample_conv(x, weight, bias, geometry,
                                                  epilogue)
            if depthwise.applies(conv, x, weight, bias):
                return depthwise.depthwise_conv(x, weight, bias, geometry,
                                                epilogue)
            return _after_norm(norm(conv.per_sample(x, weight, bias)),
                               residual, act)
    return _after_norm(conv_then_norm(conv, norm, x), residual, act)


def _after_norm(out: Tensor, residual: Optional[Tensor],
                act: Optional[nn.Module]) -> Tensor:
    if residual is not None:
        out = out + residual
    return out if act is None else act(out)


def _epilogue_applies(conv: nn.Module, norm: nn.Module, x: Tensor,
                      residual: Optional[Tensor],
                      act: Optional[nn.Module]) -> bool:
    """Whether the kernel may apply ``norm``, ``residual`` and ``act``:
    a dynamic conv at a large batch, an eval-mode BatchNorm, a ReLU, ReLU6
    or no activation, no hooks, and nothing that needs a gradient."""
    from ..layers.base import BaseDynamicConv2d
    return (isinstance(conv, BaseDynamicConv2d) and not folding_pays(x)
            and isinstance(norm, BatchNormBase) and not norm.training
            and norm.running_var is not None
            and (act is None or type(act) in (nn.ReLU, nn.ReLU6))
            and not needs_grad(conv, x) and not needs_grad(
                norm, x if residual is None else residual)
            and not has_hooks([conv, norm] + ([] if act is None else [act])))
