"""MobileNetV2 backbones whose convolutions are dynamic."""
from typing import Optional, Sequence, Union

import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmdet.models.utils import make_divisible
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import register_model
from .conv_module import DynamicConvModule
from .pretrained import CheckedPretrainedMixin
from .utils import (backbone_conv_cfg, check_stage_indices, setup_cuda_graph,
                    setup_triton_kernels)

#: the convs of an inverted residual block, and the last 1x1 conv
ROLES = ('expand', 'depthwise', 'project', 'last')


class DynamicInvertedResidual(BaseModule):
    """Inverted residual block whose three convs each have their own config.

    Its ConvModules (:class:`DynamicConvModule`, which hand a dynamic
    conv's per-sample bias to the norm) are named as in MMDetection's
    InvertedResidual:
    ``expand_conv`` (1x1, absent when ``expand_ratio`` is 1),
    ``depthwise_conv`` (3x3) and ``linear_conv`` (1x1, no activation).

    Args:
        conv_cfgs (dict): Conv config per role ('expand', 'depthwise',
            'project'); None is a static ``nn.Conv2d``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 expand_ratio: int,
                 conv_cfgs: dict,
                 norm_cfg: dict,
                 act_cfg: dict,
                 with_cp: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        mid_channels = int(round(in_channels * expand_ratio))
        self.with_res_shortcut = stride == 1 and in_channels == out_channels
        self.with_cp = with_cp
        self.with_expand_conv = expand_ratio != 1
        common = dict(norm_cfg=norm_cfg, act_cfg=act_cfg)
        if self.with_expand_conv:
            self.expand_conv = DynamicConvModule(
                in_channels, mid_channels, 1, conv_cfg=conv_cfgs['expand'],
                **common)
        self.depthwise_conv = DynamicConvModule(
            mid_channels, mid_channels, 3, stride=stride, padding=1,
            groups=mid_channels, conv_cfg=conv_cfgs['depthwise'], **common)
        self.linear_conv = DynamicConvModule(
            mid_channels, out_channels, 1, conv_cfg=conv_cfgs['project'],
            norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:

        def _inner_forward(x):
            out = self.expand_conv(x) if self.with_expand_conv else x
            out = self.linear_conv(self.depthwise_conv(out))
            return x + out if self.with_res_shortcut else out

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class DynamicMobileNetV2(CheckedPretrainedMixin, BaseModule):
    """MobileNetV2 with dynamic convolutions, laid out as MMDetection's
    ``MobileNetV2`` (``conv1`` stem, ``layer1``..``layer7``, ``conv2``) with
    its arguments and stage indices: the default ``out_indices=(1, 2, 4,
    7)`` gives 24, 32, 96 and 1280 channels (1.0x) at strides 4, 8, 16 and
    32, the FPN inputs of the papers' detectors.

    Subclasses choose which convs are dynamic in :meth:`conv_cfg_for`. The
    stem conv is always static.

    Args:
        widen_factor (float): Width multiplier (1.0, 0.75, 0.5, ...).
        out_indices (Sequence[int]): Outputs of these stages (0-6 the seven
            block stages, 7 the last 1x1 conv).
        frozen_stages (int): -1 freezes nothing; N >= 0 freezes the stem and
            stages 1..N, attention branches included.
        dynamic_conv_cfg (dict): Config of the dynamic conv.
        temperature (float): Temperature of every dynamic conv. Default: 1.0.
        norm_cfg (dict): Norm of the backbone, also passed to attention
            branches that have one. Default: ``dict(type='BN')``.
        act_cfg (dict): Activation. Default: ``dict(type='ReLU6')``.
        norm_eval (bool): Keep every BatchNorm (attention branches
            included) in eval mode while training. Default: False.
        with_cp (bool): Gradient checkpointing of the blocks.
        cuda_graph (bool | dict): Replay CUDA graphs, as in
            :class:`DynamicResNet`. Default: False.
        triton_kernels (bool, optional): Fused Triton kernels, as in
            :class:`DynamicResNet`. Default: None.
        init_cfg (dict | list[dict], optional): Initialisation config.
    """

    # expand_ratio, channels, num_blocks, stride of the seven stages
    arch_settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2],
                     [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                     [6, 320, 1, 1]]

    def __init__(self,
                 dynamic_conv_cfg: dict,
                 widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (1, 2, 4, 7),
                 frozen_stages: int = -1,
                 temperature: float = 1.0,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 cuda_graph: Union[bool, dict] = False,
                 triton_kernels: Optional[bool] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        name = type(self).__name__
        if not isinstance(widen_factor, (int, float)) or widen_factor <= 0:
            raise ValueError(f'{name}: widen_factor must be a number > 0, '
                             f'got {widen_factor!r}')
        num_stages = len(self.arch_settings) + 1
        check_stage_indices(
            name, dict(out_indices=out_indices, frozen_stages=frozen_stages),
            num_stages=num_stages)
        if frozen_stages == num_stages:
            raise ValueError(f'{name}: frozen_stages must be -1..'
                             f'{num_stages - 1}, got {frozen_stages!r}')
        norm_cfg = dict(type='BN') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='ReLU6') if act_cfg is None else act_cfg
        self.widen_factor = widen_factor
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.dynamic_conv_cfg = backbone_conv_cfg(dynamic_conv_cfg,
                                                  temperature, norm_cfg)

        in_channels = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(3, in_channels, 3, stride=2, padding=1,
                                norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.num_blocks = sum(n for _, _, n, _ in self.arch_settings)
        self.layers = []
        index = 0
        for stage, (ratio, channels, num, stride) in enumerate(
                self.arch_settings):
            out_channels = make_divisible(channels * widen_factor, 8)
            blocks = []
            for i in range(num):
                mid = int(round(in_channels * ratio))
                cfgs = {
                    role: self.conv_cfg_for(role, index, in_ch, out_ch)
                    for role, in_ch, out_ch in (
                        ('expand', in_channels, mid),
                        ('depthwise', mid, mid),
                        ('project', mid, out_channels))
                }
                blocks.append(
                    DynamicInvertedResidual(
                        in_channels, out_channels, stride if i == 0 else 1,
                        ratio, cfgs, norm_cfg, act_cfg, with_cp))
                in_channels = out_channels
                index += 1
            self.add_module(f'layer{stage + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{stage + 1}')
        self.out_channel = make_divisible(1280 * widen_factor, 8) \
            if widen_factor > 1.0 else 1280
        self.conv2 = DynamicConvModule(
            in_channels, self.out_channel, 1,
            conv_cfg=self.conv_cfg_for('last', self.num_blocks, in_channels,
                                       self.out_channel),
            norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.layers.append('conv2')
        setup_triton_kernels(self, triton_kernels)
        setup_cuda_graph(self, cuda_graph)

    def conv_cfg_for(self, role: str, block_index: int, in_channels: int,
                     out_channels: int) -> Optional[dict]:
        """Conv config of one conv: ``role`` is one of :data:`ROLES`,
        ``block_index`` counts the 17 blocks (17 for the last conv). None
        keeps it static. Default: every conv dynamic."""
        return self.dynamic_conv_cfg

    def _freeze_stages(self) -> None:
        for index in range(self.frozen_stages + 1):
            module = self.conv1 if index == 0 else getattr(
                self, f'layer{index}')
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def forward(self, x: Tensor) -> tuple:
        x = self.conv1(x)
        outs = []
        for i, layer_name in enumerate(self.layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self


@register_model
class ODMobileNetV2(DynamicMobileNetV2):
    """MobileNetV2 with ODConv in every conv but the stem, the last 1x1 conv
    to 1280 included (ODConv paper).

    Args:
        kernel_num (int): 1 or 4. Default: 1.
        reduction (float): Attention width ratio. Default: 1/16.
        Others: see :class:`DynamicMobileNetV2`.
    """

    def __init__(self, kernel_num: int = 1, reduction: float = 0.0625,
                 **kwargs) -> None:
        super().__init__(
            dict(type='ODConv2d', kernel_num=kernel_num, reduction=reduction),
            **kwargs)


@register_model
class DyConvMobileNetV2(DynamicMobileNetV2):
    """MobileNetV2 with DyConv (4 kernels) in every conv but the stem."""

    def __init__(self, kernel_num: int = 4, reduction: float = 0.25,
                 **kwargs) -> None:
        super().__init__(
            dict(type='DyConv2d', kernel_num=kernel_num, reduction=reduction),
            **kwargs)


@register_model
class CondConvMobileNetV2(DynamicMobileNetV2):
    """MobileNetV2 with CondConv (8 kernels) in the convs of its last
    ``num_dynamic_blocks`` blocks (6, the CondConv paper's placement); the
    last 1x1 conv stays static."""

    def __init__(self, kernel_num: int = 8, num_dynamic_blocks: int = 6,
                 **kwargs) -> None:
        if not isinstance(num_dynamic_blocks, int) or num_dynamic_blocks < 0:
            raise ValueError(
                f'{type(self).__name__}: num_dynamic_blocks must be an int '
                f'>= 0, got {num_dynamic_blocks!r}')
        self._num_dynamic_blocks = num_dynamic_blocks
        super().__init__(dict(type='CondConv2d', kernel_num=kernel_num),
                         **kwargs)

    def conv_cfg_for(self, role, block_index, in_channels, out_channels):
        first = self.num_blocks - self._num_dynamic_blocks
        if role == 'last' or block_index < first:
            return None
        return self.dynamic_conv_cfg


def dcd_mobilenet_branch(in_channels: int, out_channels: int,
                         fc_squeeze: int) -> dict:
    """Pool size, L and branch width of a DCD 1x1 conv in the authors'
    MobileNetV2: expanding convs pool to 2x2 and start from reduction 8,
    others pool to 1x1 and start from 2; the reduction doubles until L^2 <=
    2 * pooled features; L >= 4; width ``max(pooled, L^2) // fc_squeeze``,
    at least 4."""
    pool_size, reduction = (2, 8) if in_channels < out_channels else (1, 2)
    pooled = in_channels * pool_size**2

    def latent(r):
        return min(pooled // r, out_channels // r)

    while latent(reduction)**2 > 2 * pooled:
        reduction *= 2
    latent_dim = max(latent(reduction), 4)
    squeeze = max(max(pooled, latent_dim**2) // fc_squeeze, 4)
    return dict(pool_size=pool_size, latent_dim=latent_dim,
                squeeze_channels=squeeze)


@register_model
class DCDMobileNetV2(DynamicMobileNetV2):
    """MobileNetV2 with DCD in the 1x1 convs (expansion and projection) of
    every block that expands; depthwise convs, the first block (no
    expansion) and the last 1x1 conv stay static, as in the authors'
    released model.

    Args:
        fc_squeeze (int): Divisor of the dynamic branch width. Default: 16,
            the setting of the released ImageNet checkpoint (the code's own
            default, 8, builds a larger model that was not released).
        Others: see :class:`DynamicMobileNetV2`.
    """

    def __init__(self, fc_squeeze: int = 16, **kwargs) -> None:
        if not isinstance(fc_squeeze, int) or fc_squeeze < 1:
            raise ValueError(f'{type(self).__name__}: fc_squeeze must be a '
                             f'positive int, got {fc_squeeze!r}')
        self._fc_squeeze = fc_squeeze
        super().__init__(dict(type='DCDConv2d'), **kwargs)

    def conv_cfg_for(self, role, block_index, in_channels, out_channels):
        if role not in ('expand', 'project') or block_index == 0:
            return None
        return dict(self.dynamic_conv_cfg,
                    **dcd_mobilenet_branch(in_channels, out_channels,
                                           self._fc_squeeze))
