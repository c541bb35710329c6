"""ODConv (1x) inference at a large batch with its attentions applied
inside the conv kernel: Eq. 2 of the ODConv paper with one weight,

``y[b] = a_f[b] * conv(x[b], a_c[b] a_s[b] W) + bias``,

without writing the scaled weights out. Above
:data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH` the layer's own operations scale
the input by ``a_c`` and the output by ``a_f`` in passes of their own, and
its kxk layers need per-sample weights (``a_s``), the layer's weights many
times over (at the papers' batch of 200, 200 times), written by one op and
read back by the next. Here the per-sample conv's forward kernel
(:func:`~mmdyn.ops.per_sample_conv.conv_forward`) scales each tile of the
one weight, which every sample shares, as it multiplies, and the output as
it writes it.

With several weights (ODConv 4x) forming each tile from the bank costs
more than it saves, so those keep their paths (``docs/speed.md``).
Forward only: it takes a layer's forward where nothing needs a gradient
(inference, or a frozen layer and input).
"""
from typing import Optional

from torch import Tensor

from .dispatch import (as_conv_operands, folding_pays, may_fuse,
                       needs_grad, outside_autocast)
from .odconv_weights import odconv_attentions
from .per_sample_conv import Epilogue, Geometry, conv_forward, kernels_take


def applies(layer, x: Tensor) -> bool:
    """Whether :func:`scaled_weight_conv` computes ``layer``'s output for
    input ``x``: a dense layer (``groups == 1``) with one weight, a batch
    above :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`, no gradient wanted
    of the output, :func:`~mmdyn.ops.dispatch.may_fuse` allows a fused op,
    and the kernels take the dtypes
    (:func:`~.per_sample_conv.kernels_take`)."""
    # may_fuse first: it refuses while a model is traced or exported, before
    # a test of the batch size would fix it in the traced graph
    if layer.groups != 1 or layer.kernel_num != 1 or not may_fuse(
            x, [layer.weight], ()) or folding_pays(x) or \
            needs_grad(layer, x):
        return False
    return kernels_take(x, [layer.weight])


def scaled_weight_conv(layer, x: Tensor, channel: Tensor,
                       spatial: Optional[Tensor], filter: Optional[Tensor],
                       bias: Optional[Tensor] = None,
                       epilogue: Epilogue = Epilogue()) -> Tensor:
    """``layer``'s conv of ``x`` with its one weight scaled by ``channel``
    (B, C) and ``spatial`` (B, kh * kw), the output scaled by ``filter``
    (B, CO) and ``bias`` (B, CO) added, then the ``epilogue``; None stands
    for an attention the layer does not have. Call where :func:`applies`. Under
    autocast the input and the weight are cast to autocast's dtype, as
    autocast casts a conv's operands."""
    x, weight = as_conv_operands(x, layer.weight[0])
    with outside_autocast(x):
        return conv_forward(
            x, weight, Geometry(layer.stride, layer.padding, layer.dilation),
            shared=True, channel=channel, spatial=spatial, filter=filter,
            bias=bias, epilogue=epilogue)


def layer_forward(layer, x: Tensor, epilogue: Epilogue = Epilogue()) -> Tensor:
    """The output of ODConv (1x) ``layer`` for input ``x``, then the
    ``epilogue``: its attentions (by the attention branch's kernels where
    they take it, :func:`~.odconv_weights.odconv_attentions`), and
    :func:`scaled_weight_conv`. Call where :func:`applies`."""
    channel, spatial, filter = odconv_attentions(layer, x)
    return scaled_weight_conv(layer, x, channel, spatial, filter,
                              layer._per_sample_bias(x.shape[0]), epilogue)
