"""Eval-mode BatchNorms folded into the convolutions before them, dynamic
ones included.

In eval mode a BatchNorm is an affine map per output channel,
``bn(y) = a * y + c`` with ``a = gamma / sqrt(var + eps)`` and
``c = beta - a * mean``. Every method of mmdyn is linear in its weights for
fixed attentions, and ``a`` acts on output channels, so it moves into them:

- ODConv (Eq. 2 of the ODConv paper): the filter attention and the kernel
  mix also act per output channel, and commute with ``a``: each weight of
  the bank is scaled by ``a``; the static bias becomes ``a * b + c``;
- DyConv / CondConv: each weight and bias of the bank is scaled by ``a``;
  ``c`` becomes the layer's ``static_bias``, added after the mix (CondConv's
  routing weights need not sum to 1, so it cannot enter the bank's biases);
- DCD (``Lambda(x) W0 + P Phi(x) Q^T``, Eq. 4 of the DCD paper): ``a``
  scales the rows of ``W0`` (Lambda is diagonal per output channel) and of
  ``P``; the static bias becomes ``a * b + c``.

The attentions are computed from the layer's input, before the conv, so
they do not change. Static convs are fused by MMCV's ``_fuse_conv_bn``.
MMCV's own ``fuse_conv_bn`` must not be used on mmdyn models: it walks into
the dynamic layers and fuses their inner BatchNorms with the conv
registered before them (DCD's ``p`` with ``bn1``, which follows ``q``),
which changes what they compute.
"""
import torch
from mmcv.cnn.utils.fuse_conv_bn import _fuse_conv_bn
from torch import Tensor, nn

from .._compat import BatchNormBase
from ..layers import (BaseDynamicConv2d, DCDConv2d, ODConv2d)
from ..layers.weight_bank import WeightBankConv2d


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a convolution (static or dynamic)
    in its parent's registration order into that convolution, and put an
    ``nn.Identity`` in its place, as MMCV's ``fuse_conv_bn`` does for static
    convs. The running statistics are used: call it on a model for
    inference (``model.eval()``). Returns ``model``, changed in place."""
    last, last_name = None, None
    for name, child in model.named_children():
        if isinstance(child, BatchNormBase):
            if last is None:
                continue
            if isinstance(last, BaseDynamicConv2d):
                fold_norm_into_dynamic_conv(last, child)
            else:
                model._modules[last_name] = _fuse_conv_bn(last, child)
            model._modules[name] = nn.Identity()
            last = None
        elif isinstance(child, (nn.Conv2d, BaseDynamicConv2d)):
            # a dynamic layer is not walked into: its own BatchNorms are
            # part of its attention branch
            last, last_name = child, name
        else:
            fuse_conv_bn(child)
    return model


def _affine(norm: nn.Module, dtype: torch.dtype):
    """``(a, c)`` of ``bn(y) = a * y + c`` from the running statistics."""
    if norm.running_var is None:
        raise ValueError(
            f'fuse_conv_bn: {type(norm).__name__} has no running statistics '
            '(track_running_stats=False) and cannot be folded')
    scale = torch.rsqrt(norm.running_var.to(dtype) + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.to(dtype)
    shift = -norm.running_mean.to(dtype) * scale
    if norm.bias is not None:
        shift = shift + norm.bias.to(dtype)
    return scale, shift


def _rows(weight: Tensor, scale: Tensor, dim: int) -> Tensor:
    shape = [1] * weight.dim()
    shape[dim] = -1
    return weight * scale.view(shape)


def _set_bias(layer: nn.Module, name: str, value: Tensor) -> None:
    setattr(layer, name, nn.Parameter(value.detach().clone()))


@torch.no_grad()
def fold_norm_into_dynamic_conv(layer: BaseDynamicConv2d,
                                norm: nn.Module) -> None:
    """Fold ``norm`` (a BatchNorm on ``layer``'s output, eval mode) into
    ``layer``; see the module's docstring for each method."""
    if norm.num_features != layer.out_channels:
        raise ValueError(
            f'fuse_conv_bn: {type(norm).__name__}({norm.num_features}) does '
            f'not follow {type(layer).__name__} with {layer.out_channels} '
            'output channels')
    if isinstance(layer, ODConv2d):
        weights = [('weight', 1)]  # (K, out, in, kh, kw)
    elif isinstance(layer, WeightBankConv2d):
        weights = [('weight', 1), ('bias', 1)]  # (K, out, ...), (K, out)
    elif isinstance(layer, DCDConv2d):
        weights = [('conv.weight', 0), ('p.weight', 0)]
    else:
        raise TypeError(
            f'fuse_conv_bn: no rule to fold a BatchNorm into '
            f'{type(layer).__name__}')
    # computed in float64 and rounded once to the parameters' precision
    dtype = layer.get_parameter(weights[0][0]).dtype
    scale, shift = _affine(norm, torch.float64)
    for name, dim in weights:
        param = layer.get_parameter(name) if _has(layer, name) else None
        if param is not None:
            param.copy_(_rows(param.double(), scale, dim))
    bias_name = 'static_bias' if isinstance(layer,
                                            WeightBankConv2d) else 'bias'
    old = getattr(layer, bias_name)
    bias = shift if old is None else old.double() * scale + shift
    _set_bias(layer, bias_name, bias.to(dtype))


def _has(layer: nn.Module, name: str) -> bool:
    module_name, _, attr = name.rpartition('.')
    module = layer.get_submodule(module_name) if module_name else layer
    return getattr(module, attr, None) is not None
