"""A convolution with one weight per sample, at two images, as one dense
convolution: the batch folded into the channels (one image of 2C
channels) and convolved with the block-diagonal weight whose block (b, b)
is ``weight[b]`` and whose other blocks are zeros, so that sample b's
output channels read only sample b's input channels. It computes what
:func:`mmdyn.layers.functional.per_sample_conv2d` computes with cuDNN's
grouped convolution (the batch folded into the groups), exactly: the zero
blocks add zeros.

It does twice the grouped conv's multiply-adds, but cuDNN's dense kernels
read NCHW activations in place, where its grouped kernels convert them to
channels-last and back. On a 1x1 layer over a large enough map that
conversion costs more than the product (``docs/speed.md``): at a
detector's two images per GPU, the 1x1 layers of a ResNet's first three
stages at an 800x1333 input. Larger batches multiply the waste (four
images: four times the work); there :mod:`.per_sample_conv` takes over.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers.functional import conv_output_size
from .dispatch import may_fuse

#: The batch the block-diagonal form is for (``docs/speed.md``).
BATCH = 2
#: ... and the fewest output pixels of a 1x1 layer that it pays on.
MIN_PIXELS = 64 * 64


def applies(layer, x: Tensor, weight: Tensor,
            bias: Optional[Tensor]) -> bool:
    """Whether :func:`block_diagonal_conv` convolves ``x`` (B, C, H, W)
    with ``weight`` (B, CO, C, 1, 1) for ``layer``: a dense 1x1 layer
    (``groups == 1``) at :data:`BATCH` images whose output has at least
    :data:`MIN_PIXELS` pixels, where :func:`~mmdyn.ops.dispatch.may_fuse`
    allows a fast path, outside autocast (where it was not measured)."""
    # may_fuse first: it refuses while a model is traced or exported, before
    # a test of the batch size would fix it in the traced graph
    if layer.groups != 1 or weight.shape[-2:] != (1, 1) or \
            not may_fuse(x, (weight, bias), ()) or x.shape[0] != BATCH or \
            torch.is_autocast_enabled(x.device.type):
        return False
    out_h, out_w = conv_output_size(x, weight, layer.stride, layer.padding,
                                    layer.dilation)
    return out_h * out_w >= MIN_PIXELS


def block_diagonal_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                        stride: Tuple[int, int], padding: Tuple[int, int],
                        dilation: Tuple[int, int]) -> Tensor:
    """``out[b] = F.conv2d(x[b], weight[b], bias[b], stride, padding,
    dilation)`` for every sample ``b``, as one dense ``F.conv2d``; call
    where :func:`applies`."""
    batch, channels, height, width = x.shape
    out_channels = weight.shape[1]
    # diag_embed puts sample b's weight at (b, b) of the last two
    # dimensions and zeros elsewhere (no product: a non-finite weight stays
    # in its own sample's block); then (B_out, CO, B_in, C, kh, kw)
    blocks = torch.diag_embed(weight.movedim(0, -1)).permute(4, 0, 5, 1, 2, 3)
    out = F.conv2d(
        x.reshape(1, batch * channels, height, width),
        blocks.reshape(batch * out_channels, batch * channels,
                       *weight.shape[-2:]),
        None if bias is None else bias.reshape(-1),
        stride=stride, padding=padding, dilation=dilation)
    return out.view(batch, out_channels, *out.shape[-2:])
