"""DCD's inference at a large batch as one conv kernel: Eq. 4 of the DCD
paper, ``Lambda(x) W0 x + P Phi(x) Q^T x``, with the layer's BatchNorms as
the affine maps of their running statistics.

Above :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH` the layer computes Eq. 4
on the activations: the static conv, then Lambda, then the residual
through the latent space, each a pass over the output. Here the per-sample
conv's forward kernel (:func:`~mmdyn.ops.per_sample_conv.conv_forward`)
computes the static conv, scales it by Lambda as it writes it, and adds the
residual, whose latent features it gathers from the input tiles it reads
for the centre tap anyway: the output is written once, and no per-sample
weight exists.

Forward only: it takes the layer's forward where nothing needs a gradient
(inference, or a frozen layer and input), in float32 (TF32) and under
autocast.
"""
import torch
from torch import Tensor

from .._compat import BatchNormBase
from .conv_norm import norm_affine
from .dcd_weights import dcd_dynamics
from .dispatch import (as_conv_operands, folding_pays, may_fuse,
                       needs_grad, outside_autocast)
from .per_sample_conv import (Epilogue, Geometry, LowRank, conv_forward,
                              kernels_take)


def applies(layer, x: Tensor) -> bool:
    """Whether :func:`dcd_conv` computes ``layer``'s output for input ``x``:
    a dense ``W0`` (``groups == 1``), both BatchNorms with running
    statistics in eval mode (as with ``norm_eval=True``), a batch above
    :data:`~mmdyn.ops.dispatch.MAX_FOLD_BATCH`, no gradient wanted of the
    output, :func:`~mmdyn.ops.dispatch.may_fuse` allows a fused op (for
    the convs and BatchNorms it stands in for) and the kernels take the
    dtypes (:func:`~.per_sample_conv.kernels_take`)."""
    # may_fuse first: it refuses while a model is traced or exported, before
    # a test of the batch size would fix it in the traced graph
    stands_in_for = [layer.conv, layer.q, layer.p, layer.bn1, layer.bn2]
    if layer.groups != 1 or not may_fuse(
            x, [layer.conv.weight, layer.q.weight, layer.p.weight],
            stands_in_for) or folding_pays(x) or needs_grad(layer, x):
        return False
    return all(
        isinstance(bn, BatchNormBase) and not bn.training
        and bn.running_var is not None
        for bn in (layer.bn1, layer.bn2)) and kernels_take(
            x, [layer.conv.weight])


def dcd_conv(layer, x: Tensor, epilogue: Epilogue = Epilogue()) -> Tensor:
    """The output of :class:`~mmdyn.layers.DCDConv2d` ``layer`` for input
    ``x``, then the ``epilogue``; call where :func:`applies`.

    With ``z = bn1(Q^T x) = s1 Q^T x + h1`` on the centre tap, the residual
    ``bn2(Phi z) + z = M z + h2`` with ``M = diag(s2) Phi + I``, so it is
    ``P (M (s1 Q^T x) + M h1 + h2)``: the kernel gets ``diag(s1) Q^T``,
    ``M`` and ``M h1 + h2`` per sample, and ``P``."""
    scale, phi = dcd_dynamics(layer, x)
    s1, h1 = norm_affine(layer.bn1)
    s2, h2 = norm_affine(layer.bn2)
    m = s2[:, None] * phi + torch.eye(
        layer.latent_dim, dtype=x.dtype, device=x.device)
    residual = LowRank(q=s1[:, None] * layer.q.weight.flatten(1), m=m,
                       c=m @ h1 + h2, p=layer.p.weight.flatten(1))
    bias = None if layer.bias is None else layer.bias.expand(x.shape[0], -1)
    x, weight = as_conv_operands(x, layer.conv.weight)
    with outside_autocast(x):
        return conv_forward(
            x, weight, Geometry(layer.stride, layer.padding, layer.dilation),
            shared=True, filter=scale, bias=bias, low_rank=residual,
            epilogue=epilogue)
