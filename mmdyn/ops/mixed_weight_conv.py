"""Inference of a conv whose per-sample weights are mixed from a weight
bank and scaled by attentions, without writing those weights out:

``y[b] = a_f[b] * conv(x[b], a_c[b] a_s[b] sum_k a_w[b, k] W_k) + bias[b]``

(Eq. 2 of the ODConv paper; with the kernel-wise attention alone, Eq. 1:
CondConv and DyConv). Above :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`
the per-sample weights of a layer are its weights many times over (at the
papers' batch of 200, 200 times), written to memory by one op and read
back by the next. Here the per-sample conv's forward kernel
(:func:`~mmdyn.ops.per_sample_conv.conv_forward`) forms each sample's
weight tile from the bank's tiles, which every sample shares, and the
sample's attentions as it multiplies.

Forward only: it takes a layer's forward where nothing needs a gradient
(inference, or layers and inputs that are all frozen). A training step
keeps the per-sample weights, through which the attentions get their
gradients.
"""
from typing import Optional

import torch
from torch import Tensor

from .dispatch import folding_pays, may_fuse, outside_autocast
from .per_sample_conv import Geometry, conv_forward, kernels_take


def applies(layer, x: Tensor) -> bool:
    """Whether :func:`mixed_weight_conv` computes ``layer``'s output for
    input ``x``: a dense layer (``groups == 1``), a batch above
    :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`, no gradient wanted of the
    output, :func:`~mmdyn.ops.dispatch.may_fuse` allows a fused op and the
    kernels take the dtypes (:func:`~.per_sample_conv.kernels_take`)."""
    # may_fuse first: it refuses while a model is traced or exported, before
    # a test of the batch size would fix it in the traced graph
    if layer.groups != 1 or not may_fuse(x, [layer.weight], ()) or \
            folding_pays(x) or needs_grad(layer, x):
        return False
    return kernels_take(x, [layer.weight])


def needs_grad(layer, x: Tensor) -> bool:
    """Whether ``layer``'s output for ``x`` needs a gradient."""
    return torch.is_grad_enabled() and (x.requires_grad or any(
        p.requires_grad for p in layer.parameters()))


def mixed_weight_conv(layer, x: Tensor, mix: Optional[Tensor] = None,
                      channel: Optional[Tensor] = None,
                      spatial: Optional[Tensor] = None,
                      filter: Optional[Tensor] = None,
                      bias: Optional[Tensor] = None) -> Tensor:
    """``layer``'s conv of ``x`` with the weights of its bank
    ``layer.weight`` (K, CO, C, kh, kw) mixed by ``mix`` (B, K) and scaled
    by ``channel`` (B, C) and ``spatial`` (B, kh * kw), the output scaled
    by ``filter`` (B, CO) and ``bias`` (B, CO) added; None stands for an
    attention the layer does not have (1; with one weight and no ``mix``,
    the bank's only weight). Call where :func:`applies`. Under autocast
    the input and the bank are cast to autocast's dtype, as autocast casts
    a conv's operands, and the weight tiles are mixed in float32."""
    device = x.device.type
    bank = layer.weight
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, bank = x.to(dtype), bank.to(dtype)
    with outside_autocast(x):
        return conv_forward(
            x, bank, Geometry(layer.stride, layer.padding, layer.dilation),
            bank=True, mix=mix, channel=channel, spatial=spatial,
            filter=filter, bias=bias)
