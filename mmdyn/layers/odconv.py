"""ODConv (Li, Zhou and Yao, ICLR 2022): omni-dimensional dynamic
convolution."""
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS
from torch import Tensor, nn

from .._compat import BatchNormBase
from ..ops import odconv_weights as fused
from ..ops import scaled_weight_conv as scaled
from .base import BaseDynamicConv2d, IntOrPair, attention_width
from .functional import (attention_branch, global_avg_pool, mix_weights,
                         soften)
from .weight_bank import check_kernel_num, make_weight_bank


class ODAttentions(NamedTuple):
    """The four attentions of one input batch. ``None`` stands for an
    attention the layer does not have (it is 1)."""
    channel: Tensor  # (B, in_channels): alpha_c
    filter: Optional[Tensor]  # (B, out_channels): alpha_f
    spatial: Optional[Tensor]  # (B, kh * kw): alpha_s
    kernel: Optional[Tensor]  # (B, kernel_num): alpha_w, kernel-wise


class ODConvAttention(nn.Module):
    """The multi-head attention branch of ODConv (Sec. 3.2).

    Global average pool, ``fc`` (1x1 conv, no bias), ``bn``, ReLU, then four
    1x1-conv heads with bias: ``channel_fc`` (sigmoid), ``filter_fc``
    (sigmoid; absent for depthwise convs), ``spatial_fc`` (sigmoid; absent
    for 1x1 kernels) and ``kernel_fc`` (softmax over kernels; absent for one
    kernel). Names and shapes are those of the authors' release, so their
    checkpoints load as they are.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: tuple,
                 kernel_num: int,
                 attention_channels: int,
                 depthwise: bool,
                 norm_cfg: dict) -> None:
        super().__init__()
        self.fc = nn.Conv2d(in_channels, attention_channels, 1, bias=False)
        self.bn = build_norm_layer(norm_cfg, attention_channels)[1]
        self.channel_fc = nn.Conv2d(attention_channels, in_channels, 1)
        if not depthwise:
            self.filter_fc = nn.Conv2d(attention_channels, out_channels, 1)
        if kernel_size != (1, 1):
            self.spatial_fc = nn.Conv2d(attention_channels,
                                        kernel_size[0] * kernel_size[1], 1)
        if kernel_num > 1:
            self.kernel_fc = nn.Conv2d(attention_channels, kernel_num, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode='fan_out', nonlinearity='relu')
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @attention_branch
    def forward(self, x: Tensor, temperature: float) -> ODAttentions:
        if (self.bn.training and x.shape[0] == 1
                and isinstance(self.bn, BatchNormBase)
                and not isinstance(self.bn, nn.SyncBatchNorm)):
            raise ValueError(
                'ODConv2d: the BatchNorm of the attention branch cannot train '
                'on one image per GPU (its input is one pooled vector per '
                'image). Keep it in eval mode (norm_eval=True in the '
                'backbone, or call .eval()), train with more than one image '
                "per GPU, or use norm_cfg=dict(type='SyncBN') across GPUs.")
        pooled = global_avg_pool(x, self.fc.weight.dtype)
        hidden = F.linear(pooled, self.fc.weight.flatten(1))
        hidden = F.relu(self.bn(hidden[:, :, None, None])).flatten(1)

        def head(name):
            # a 1x1 conv on one vector per sample, at the temperature
            conv = getattr(self, name, None)
            if conv is None:
                return None
            return soften(F.linear(hidden, conv.weight.flatten(1), conv.bias),
                          temperature)

        kernel = head('kernel_fc')
        return ODAttentions(
            channel=head('channel_fc').sigmoid(),
            filter=_sigmoid(head('filter_fc')),
            spatial=_sigmoid(head('spatial_fc')),
            kernel=None if kernel is None else kernel.softmax(dim=1))


def _sigmoid(logits: Optional[Tensor]) -> Optional[Tensor]:
    return None if logits is None else logits.sigmoid()


@MODELS.register_module()
class ODConv2d(BaseDynamicConv2d):
    """Omni-dimensional dynamic convolution, Eq. 2 of the ODConv paper:

    ``y = (a_w1 a_f a_c a_s W_1 + ... + a_wn a_f a_c a_s W_n) * x``

    with a spatial (a_s), input-channel (a_c) and filter (a_f) attention
    shared by the n weights and a kernel-wise attention (a_w) over them.

    As in the authors' code, a_c and a_f scale the input and output channels
    (which equals scaling the weights: the conv is linear in both), and only
    a_s and a_w make a weight per sample; a 1x1 layer with one weight is a
    static conv between the two scalings. Where the fused op applies
    (:mod:`mmdyn.ops.odconv_weights`: CUDA, eval-mode attention BatchNorm,
    see :func:`mmdyn.ops.may_fuse`), all four attentions are folded into
    per-sample weights by a few Triton kernels instead; at inference on a
    large batch, a layer with one weight has them applied inside the conv
    kernel (:mod:`mmdyn.ops.scaled_weight_conv`).

    Args:
        kernel_num (int): Number of weights n ("1x" or "4x" in the paper).
            Default: 1.
        reduction (float): Attention width as a fraction of in_channels.
            Default: 1/16.
        min_channels (int): Smallest attention width. Default: 16.
        norm_cfg (dict): Norm layer of the attention branch.
            Default: ``dict(type='BN')``.
        Others: see :class:`mmdyn.layers.BaseDynamicConv2d`. The authors'
            layer has no bias; ``bias=True`` adds a static one after the
            filter attention.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: IntOrPair = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: bool = False,
                 kernel_num: int = 1,
                 reduction: float = 0.0625,
                 min_channels: int = 16,
                 norm_cfg: Optional[dict] = None,
                 temperature: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, temperature)
        name = type(self).__name__
        self.kernel_num = check_kernel_num(name, kernel_num)
        self.attention = ODConvAttention(
            in_channels,
            out_channels,
            self.kernel_size,
            kernel_num,
            attention_width(name, in_channels, reduction, min_channels),
            depthwise=self.is_depthwise,
            norm_cfg=dict(type='BN') if norm_cfg is None else norm_cfg)
        self.weight = make_weight_bank(kernel_num, out_channels,
                                       in_channels // groups,
                                       self.kernel_size)

    def load_static_weight(self, weight: Tensor,
                           bias: Optional[Tensor] = None) -> None:
        """Zero the attention heads (each sigmoid attention is then 0.5, the
        kernel-wise attention 1/n) and set every weight of the bank to
        ``weight / 0.5^m``, m the number of sigmoid attentions this layer
        has: the layer starts as the static conv, and the heads learn from
        there."""
        self._check_static(weight, bias)
        heads = [getattr(self.attention, name, None)
                 for name in ('channel_fc', 'filter_fc', 'spatial_fc')]
        num_sigmoids = sum(head is not None for head in heads)
        with torch.no_grad():
            for head in heads + [getattr(self.attention, 'kernel_fc', None)]:
                if head is not None:
                    head.weight.zero_()
                    head.bias.zero_()
            self.weight.copy_((weight * 2.0**num_sigmoids).expand_as(
                self.weight))
        self._load_static_bias(bias)

    def attention_maps(self, x: Tensor) -> Dict[str, Tensor]:
        """``spatial`` (B, kh*kw), ``channel`` (B, in), ``filter`` (B, out)
        and ``kernel`` (B, K): those of the four the layer has."""
        maps = self.attention(x, self.temperature)._asdict()
        return {name: value for name, value in maps.items()
                if value is not None}

    def forward(self, x: Tensor) -> Tensor:
        if scaled.applies(self, x):  # inference at a large batch
            return scaled.layer_forward(self, x)
        folded = self.per_sample_weights(x)
        if folded is not None:
            return self.per_sample(x, *folded)
        att = self.attention(x, self.temperature)
        # the weights the kernel-wise (a_w) and spatial (a_s) attentions
        # make: (1 or B, out, in / groups, kh, kw)
        weight = self.weight if att.kernel is None else mix_weights(
            att.kernel, self.weight)
        if att.spatial is not None:
            weight = weight * att.spatial.view(-1, 1, 1, *self.kernel_size)
        # the input-channel attention (a_c) on the input
        x = x * att.channel[:, :, None, None]
        if weight.shape[0] == 1:  # one static weight for every sample
            out = F.conv2d(x, weight[0], None, groups=self.groups,
                           **self.conv_kwargs())
        else:
            out = self.per_sample(x, weight)
        # the filter attention (a_f) on the output
        if att.filter is not None:
            out = out * att.filter[:, :, None, None]
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out

    def per_sample_weights(
            self, x: Tensor) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """Where the fused op computes them (:mod:`mmdyn.ops.odconv_weights`),
        the per-sample weights with every attention folded in (Eq. 2, the
        filter attention as a scale of each output channel's weights) and
        the static bias per sample; None elsewhere: the layer's own
        operations apply ``a_c`` and ``a_f`` to the activations."""
        if not fused.applies(self, x):
            return None
        return (fused.odconv_weights(self, x),
                self._per_sample_bias(x.shape[0]))

    def _per_sample_bias(self, batch: int) -> Optional[Tensor]:
        """The static bias as one per sample (B, out), for
        :meth:`per_sample`."""
        return None if self.bias is None else self.bias.expand(
            batch, self.out_channels)
