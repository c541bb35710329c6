"""MobileNetV2 backbones whose convolutions are dynamic."""
from typing import Optional, Sequence, Union

import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer
from mmdet.models.backbones import MobileNetV2
from mmdet.models.layers import InvertedResidual
from torch import Tensor, nn

from ...registry import register_model
from .blocks import conv_module_forward
from .pretrained import CheckedPretrainedMixin, without_empty_pretrained
from .utils import backbone_conv_cfg, check_stage_indices, setup_cuda_graph

#: the convs of an inverted residual block, and the last 1x1 conv
ROLES = ('expand', 'depthwise', 'project', 'last')


def make_dynamic(conv_module: nn.Module, conv_cfg: Optional[dict]) -> None:
    """Rebuild the conv of mmcv's ``ConvModule`` ``conv_module`` from
    ``conv_cfg`` with the same geometry (None: leave it static)."""
    if conv_cfg is None:
        return
    conv = conv_module.conv
    conv_module.conv = build_conv_layer(
        conv_cfg, conv.in_channels, conv.out_channels, conv.kernel_size,
        stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        groups=conv.groups, bias=conv.bias is not None)


class DynamicInvertedResidual(InvertedResidual):
    """MMDetection's ``InvertedResidual`` (the same ConvModules and names:
    ``expand_conv``, ``depthwise_conv``, ``linear_conv``) whose three convs
    each have their own config, as DCD's MobileNetV2 needs (dynamic 1x1
    convs, static depthwise ones), and hand a dynamic conv's per-sample bias
    to the norm after it (:func:`.blocks.conv_module_forward`).

    Args:
        conv_cfgs (dict): Conv config per role (``'expand'``,
            ``'depthwise'``, ``'project'``); None keeps a static conv.
        Others: as ``InvertedResidual``.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 mid_channels: int, stride: int, with_expand_conv: bool,
                 conv_cfgs: dict, norm_cfg: dict, act_cfg: dict,
                 with_cp: bool = False) -> None:
        super().__init__(in_channels, out_channels, mid_channels,
                         stride=stride, with_expand_conv=with_expand_conv,
                         norm_cfg=norm_cfg, act_cfg=act_cfg, with_cp=with_cp)
        if with_expand_conv:
            make_dynamic(self.expand_conv, conv_cfgs['expand'])
        make_dynamic(self.depthwise_conv, conv_cfgs['depthwise'])
        make_dynamic(self.linear_conv, conv_cfgs['project'])

    def forward(self, x: Tensor) -> Tensor:

        def inner_forward(x):
            out = conv_module_forward(self.expand_conv, x) \
                if self.with_expand_conv else x
            out = conv_module_forward(self.depthwise_conv, out)
            return conv_module_forward(
                self.linear_conv, out,
                x if self.with_res_shortcut else None)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner_forward, x, use_reentrant=False)
        return inner_forward(x)


@register_model
class DynamicMobileNetV2(CheckedPretrainedMixin, MobileNetV2):
    """MMDetection's MobileNetV2 (the same layers, names, arguments and
    stage indices: ``conv1`` stem, ``layer1``..``layer7``, ``conv2``) with
    dynamic convolutions. The default ``out_indices=(1, 2, 4, 7)`` gives 24,
    32, 96 and 1280 channels (1.0x) at strides 4, 8, 16 and 32, the FPN
    inputs of the papers' detectors.

    Subclasses choose which convs are dynamic in :meth:`conv_cfg_for`
    (default: every conv but the stem). Without ``dynamic_conv_cfg`` it is
    MMDetection's MobileNetV2 with the options below.

    Args:
        dynamic_conv_cfg (dict, optional): Config of the dynamic conv; the
            backbone's ``norm_cfg`` is passed on to layers whose attention
            has a norm. None: static convs.
        widen_factor (float): Width multiplier (1.0, 0.75, 0.5, ...).
        out_indices (Sequence[int]): Outputs of these stages (0-6 the seven
            block stages, 7 the last 1x1 conv).
        frozen_stages (int): -1 freezes nothing; N >= 0 freezes the stem and
            stages 1..N, attention branches included.
        temperature (float): Temperature of every dynamic conv. Default: 1.0.
        norm_cfg (dict): Norm of the backbone. Default: ``dict(type='BN')``.
        act_cfg (dict): Activation. Default: ``dict(type='ReLU6')``.
        norm_eval (bool): Keep every BatchNorm (attention branches
            included) in eval mode while training. Default: False.
        with_cp (bool): Gradient checkpointing of the blocks.
        cuda_graph (bool | dict): Replay CUDA graphs, as in
            :class:`DynamicResNet`. Default: False.
        init_cfg (dict | list[dict], optional): Initialisation config.
    """

    def __init__(self,
                 dynamic_conv_cfg: Optional[dict] = None,
                 widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (1, 2, 4, 7),
                 frozen_stages: int = -1,
                 temperature: float = 1.0,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 cuda_graph: Union[bool, dict] = False,
                 init_cfg=None) -> None:
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
        self.dynamic_conv_cfg = None if dynamic_conv_cfg is None else \
            backbone_conv_cfg(dynamic_conv_cfg, temperature, norm_cfg)
        self.num_blocks = sum(n for _, _, n, _ in self.arch_settings)
        self._blocks_built = 0
        super().__init__(widen_factor, out_indices, frozen_stages,
                         norm_cfg=norm_cfg, act_cfg=act_cfg,
                         norm_eval=norm_eval, with_cp=with_cp,
                         init_cfg=without_empty_pretrained(init_cfg))
        make_dynamic(self.conv2,
                     self._conv_cfg('last', self.num_blocks,
                                    self.conv2.conv.in_channels,
                                    self.conv2.conv.out_channels))
        setup_cuda_graph(self, cuda_graph)

    def make_layer(self, out_channels: int, num_blocks: int, stride: int,
                   expand_ratio: int) -> nn.Sequential:
        """As MMDetection's, with each block's convs from
        :meth:`conv_cfg_for`."""
        blocks = []
        for i in range(num_blocks):
            mid = int(round(self.in_channels * expand_ratio))
            index = self._blocks_built
            cfgs = {role: self._conv_cfg(role, index, in_ch, out_ch)
                    for role, in_ch, out_ch in (
                        ('expand', self.in_channels, mid),
                        ('depthwise', mid, mid),
                        ('project', mid, out_channels))}
            blocks.append(DynamicInvertedResidual(
                self.in_channels, out_channels, mid,
                stride=stride if i == 0 else 1,
                with_expand_conv=expand_ratio != 1, conv_cfgs=cfgs,
                norm_cfg=self.norm_cfg, act_cfg=self.act_cfg,
                with_cp=self.with_cp))
            self.in_channels = out_channels
            self._blocks_built += 1
        return nn.Sequential(*blocks)

    def _conv_cfg(self, role, block_index, in_channels, out_channels):
        if self.dynamic_conv_cfg is None:
            return None
        return self.conv_cfg_for(role, block_index, in_channels,
                                 out_channels)

    def conv_cfg_for(self, role: str, block_index: int, in_channels: int,
                     out_channels: int) -> Optional[dict]:
        """Conv config of one conv: ``role`` is one of :data:`ROLES`,
        ``block_index`` counts the 17 blocks (17 for the last conv). None
        keeps it static. Default: every conv dynamic."""
        return self.dynamic_conv_cfg

    def train(self, mode: bool = True):
        super().train(mode)
        return self  # mmdet's MobileNetV2.train returns None, nn.Module self


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
