"""ODConv (Li, Zhou and Yao, ICLR 2022): omni-dimensional dynamic
convolution."""
from typing import Dict, NamedTuple, Optional

import torch
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS
from torch import Tensor, nn
from torch.nn.modules.batchnorm import SyncBatchNorm, _BatchNorm

from .base import DynamicConv2d, IntOrPair, attention_width
from .functional import (aggregate_kernels, attention_branch, global_avg_pool,
                         soften)
from .kernel_bank import check_kernel_num, make_kernel_bank
from .odconv_fused import (MAX_ATTENTION_CHANNELS, MAX_KERNELS, FoldLayout,
                           FusedODKernels)


class ODAttentions(NamedTuple):
    """The four attentions of one input batch. ``None`` stands for an
    attention the layer does not have (it is 1)."""
    channel: Tensor  # (B, in_channels): alpha_c
    filter: Optional[Tensor]  # (B, out_channels): alpha_f
    spatial: Optional[Tensor]  # (B, kh * kw): alpha_s
    kernel: Optional[Tensor]  # (B, kernel_num): alpha_w


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

    _HEADS = ('channel_fc', 'filter_fc', 'spatial_fc', 'kernel_fc')

    @attention_branch
    def forward(self, x: Tensor, temperature: float) -> ODAttentions:
        if (self.bn.training and x.shape[0] == 1
                and isinstance(self.bn, _BatchNorm)
                and not isinstance(self.bn, SyncBatchNorm)):
            raise ValueError(
                'ODConv2d: the BatchNorm of the attention branch cannot train '
                'on one image per GPU (its input is one pooled vector per '
                'image). Keep it in eval mode (norm_eval=True in the '
                'backbone, or call .eval()), train with more than one image '
                "per GPU, or use norm_cfg=dict(type='SyncBN') across GPUs.")
        pooled = global_avg_pool(x, self.fc.weight.dtype)
        hidden = F.linear(pooled, self.fc.weight.flatten(1))
        hidden = F.relu(self.bn(hidden[:, :, None, None])).flatten(1)
        # the heads are 1x1 convs on one vector per sample: one matrix
        # product for all of them, then their activations
        heads = [getattr(self, name, None) for name in self._HEADS]
        present = [head for head in heads if head is not None]
        logits = F.linear(hidden, torch.cat([h.weight.flatten(1)
                                             for h in present]),
                          torch.cat([h.bias for h in present]))
        logits = soften(logits, temperature)
        sizes = [0 if head is None else head.out_channels for head in heads]
        num_sigmoid = sum(sizes[:3])
        gates = logits[:, :num_sigmoid].sigmoid().split(sizes[:3], dim=1)
        channel, filter_, spatial = (gate if size else None
                                     for gate, size in zip(gates, sizes))
        kernel = logits[:, num_sigmoid:].softmax(dim=1) if sizes[3] else None
        return ODAttentions(channel=channel, filter=filter_, spatial=spatial,
                            kernel=kernel)


@MODELS.register_module()
class ODConv2d(DynamicConv2d):
    """Omni-dimensional dynamic convolution, Eq. 2 of the ODConv paper:

    ``y = sum_i (a_wi * a_fi * a_ci * a_si * W_i) * x``

    with a spatial (a_s), input-channel (a_c) and filter (a_f) attention
    shared by the kernels and a kernel attention (a_w) over them.

    The input-channel attention scales the input and the filter attention
    the output, which equals scaling the kernel; only the spatial and kernel
    attentions need a per-sample kernel, and a 1x1 layer with one kernel
    needs none. Where per-sample kernels touch fewer numbers than the
    activations (large images), all four attentions are folded into them
    and a 1x1 layer becomes one batched matrix product
    (:attr:`fold_attentions` overrides the choice).

    Args:
        kernel_num (int): Number of kernels ("1x" or "4x" in the paper).
            Default: 1.
        reduction (float): Attention width as a fraction of in_channels.
            Default: 1/16.
        min_channels (int): Smallest attention width. Default: 16.
        norm_cfg (dict): Norm layer of the attention branch.
            Default: ``dict(type='BN')``.
        Others: see :class:`mmdyn.layers.DynamicConv2d`. The authors' layer
            has no bias; ``bias=True`` adds a static one after the filter
            attention.
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
        self.weight = make_kernel_bank(kernel_num, out_channels,
                                       in_channels // groups,
                                       self.kernel_size)

    def load_static_weight(self, weight: Tensor,
                           bias: Optional[Tensor] = None) -> None:
        """Zero the attention heads (each sigmoid attention is then 0.5, the
        kernel attention 1/K) and set every kernel to ``weight / 0.5^n``, n
        the number of sigmoid attentions this layer has: the layer starts as
        the static conv, and the heads learn from there."""
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

    def uses_triton(self, x: Tensor) -> bool:
        """Whether forward computes the attentions and per-sample kernels
        for input ``x`` with the fused Triton kernels
        (:mod:`mmdyn.layers.odconv_fused`): where :attr:`triton_kernels`
        allows it, for float32 and float64 outside autocast,
        ``torch.compile`` and tracing, with the attention's BatchNorm using
        running statistics (``norm_eval=True``), one group or a depthwise
        conv, the attentions folded into the kernels
        (:meth:`folds_attentions`) and no hooks on the attention branch."""
        attention = self.attention
        bn = attention.bn
        return (self._triton_can_run(x, [self.weight, attention.fc.weight],
                                     [attention])
                and isinstance(bn, _BatchNorm) and not bn.training
                and bn.running_mean is not None
                and (self.groups == 1 or self.is_depthwise)
                and attention.fc.out_channels <= MAX_ATTENTION_CHANNELS
                and self.kernel_num <= MAX_KERNELS
                and self.folds_attentions(x))

    def _fused_kernels(self, x: Tensor,
                       input_sum: Optional[Tensor]) -> Tensor:
        """Per-sample kernels (B, out, in / groups, kh, kw) with every
        attention folded in, from :class:`FusedODKernels`, for input ``x``
        summed over its pixels (``input_sum`` if given)."""
        att = self.attention
        bn = att.bn
        heads = [getattr(att, name, None) for name in att._HEADS]
        layout = FoldLayout(
            depthwise=self.is_depthwise,
            channel=self.in_channels,
            filter=0 if heads[1] is None else self.out_channels,
            spatial=0 if heads[2] is None else heads[2].out_channels,
            kernels=self.kernel_num,
            out_channels=self.out_channels,
            in_per_group=self.in_channels // self.groups,
            taps=self.kernel_size[0] * self.kernel_size[1])
        head_args = []
        for head in heads:
            head_args += [None, None] if head is None else [
                head.weight.contiguous(), head.bias]
        pooled = x.sum(dim=(2, 3)) if input_sum is None else input_sum
        return FusedODKernels.apply(
            layout, pooled, x.shape[2] * x.shape[3], self.temperature,
            att.fc.weight.contiguous(), bn.weight, bn.bias, bn.running_mean,
            bn.running_var, bn.eps, *head_args, self.weight.contiguous())

    def forward(self, x: Tensor,
                input_sum: Optional[Tensor] = None) -> Tensor:
        """``input_sum``: ``x`` summed over its pixels (B, C), where the
        caller has it (:meth:`takes_input_sum`); else the layer sums ``x``
        where it needs to."""
        if self.uses_triton(x):
            return self.per_sample(x, self._fused_kernels(x, input_sum),
                                   self._per_sample_bias(x.shape[0]))
        attention = self.attention(x, self.temperature)
        fold = self.folds_attentions(x)
        static_kernel = attention.kernel is None and attention.spatial is None
        if static_kernel and not fold:
            return self._scaled_static_conv(x, attention)
        if attention.kernel is None:
            weight = self.weight
        else:
            weight = aggregate_kernels(attention.kernel, self.weight)
        if attention.spatial is not None:
            weight = weight * attention.spatial.view(-1, 1, 1,
                                                     *self.kernel_size)
        batch = x.shape[0]
        weight = weight.expand(batch, *weight.shape[1:])
        if fold:
            return self._folded_conv(x, weight, attention)
        out = self.per_sample(x * attention.channel[:, :, None, None],
                              weight)
        return self._filter_and_bias(out, attention)

    def _scaled_static_conv(self, x: Tensor, attention) -> Tensor:
        """A 1x1 layer with one kernel: a static conv between the channel
        and the filter scalings."""
        out = F.conv2d(x * attention.channel[:, :, None, None],
                       self.weight[0], None, groups=self.groups,
                       **self.conv_kwargs())
        return self._filter_and_bias(out, attention)

    def _filter_and_bias(self, out: Tensor, attention) -> Tensor:
        if attention.filter is not None:
            out = out * attention.filter[:, :, None, None]
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        return out

    def _folded_conv(self, x: Tensor, weight: Tensor, attention) -> Tensor:
        """Per-sample kernels scaled by a_f (rows) and a_c (columns): for a
        grouped conv, kernel row o sees the input channels of its group."""
        batch, groups = x.shape[0], self.groups
        in_per_group = self.in_channels // groups
        channel = attention.channel.view(batch, groups, 1, in_per_group)
        channel = channel.expand(batch, groups,
                                 self.out_channels // groups, in_per_group)
        scale = channel.reshape(batch, self.out_channels, in_per_group)
        if attention.filter is not None:
            scale = scale * attention.filter[:, :, None]
        weight = weight * scale[..., None, None]
        return self.per_sample(x, weight, self._per_sample_bias(batch))

    def _per_sample_bias(self, batch: int) -> Optional[Tensor]:
        """The static bias as one per sample (B, out), for
        :meth:`per_sample`."""
        return None if self.bias is None else self.bias.expand(
            batch, self.out_channels)
