"""ResNet backbones whose residual blocks use dynamic convolutions."""
import math
from typing import Optional, Union

from mmdet.models.backbones import ResNet
from mmdet.models.layers import ResLayer

from ...registry import register_model
from .blocks import DYNAMIC_BLOCKS
from .pretrained import CheckedPretrainedMixin, without_empty_pretrained
from .utils import backbone_conv_cfg, check_stage_indices, setup_cuda_graph


class _BlockFactory:
    """Stands in for a block class in mmdet's ``ResLayer``: builds the i-th
    block with the dynamic conv config if ``dynamic[i]`` (as the block that
    hands its convs' per-sample biases to its norms, :mod:`.blocks`), else
    with the static one that ``ResLayer`` also gives the downsample
    shortcut."""

    def __init__(self, block, dynamic, dynamic_conv_cfg):
        self.block = block
        self.expansion = block.expansion
        self.dynamic = list(dynamic)
        self.dynamic_conv_cfg = dynamic_conv_cfg

    def __call__(self, **kwargs):
        if self.dynamic.pop(0):
            kwargs['conv_cfg'] = self.dynamic_conv_cfg
            return DYNAMIC_BLOCKS.get(self.block, self.block)(**kwargs)
        return self.block(**kwargs)


@register_model
class DynamicResNet(CheckedPretrainedMixin, ResNet):
    """MMDetection's ResNet with dynamic convolutions in its residual blocks:
    the same layers, names and arguments, with each block's convs built
    from ``dynamic_conv_cfg``. Without one it is MMDetection's ResNet with
    the options below (e.g. the static baseline with CUDA graphs:
    ``dict(type='DynamicResNet', depth=50, cuda_graph=True)``).

    The stem conv and the downsample shortcuts stay static, as in the papers.
    Every argument of :class:`mmdet.models.backbones.ResNet` works as there
    (``depth``, ``out_indices``, ``frozen_stages``, ``norm_cfg``,
    ``norm_eval``, ``with_cp``, ``init_cfg``, ...); ``norm_eval`` and
    ``frozen_stages`` also cover the BatchNorms and parameters of the
    attention branches, which live inside the blocks. ``conv_cfg`` is the
    config of the static convs.

    Args:
        dynamic_conv_cfg (dict, optional): Config of the dynamic conv of the
            blocks, e.g. ``dict(type='ODConv2d', kernel_num=4)``; the
            backbone's ``norm_cfg`` is passed on to layers whose attention
            has a norm. None: static blocks.
        num_dynamic_blocks (int, optional): Only the last this many residual
            blocks are dynamic (CondConv's placement). Default: all.
        dynamic_shortcut (bool): Make the 1x1 downsample shortcuts dynamic
            too (DyConv's "every conv but the first"). Default: False.
        temperature (float): Temperature of every dynamic conv. Default: 1.0
            (annealing off, as for detection fine-tuning).
        cuda_graph (bool | dict): Replay CUDA graphs of forward and backward
            instead of launching each GPU kernel (True, or a dict of
            :class:`mmdyn.runtime.CUDAGraphForward` arguments, e.g.
            ``dict(size_divisor=128)``); not with ``with_cp``. Default:
            False.
    """

    def __init__(self,
                 depth: int,
                 dynamic_conv_cfg: Optional[dict] = None,
                 num_dynamic_blocks: Optional[int] = None,
                 dynamic_shortcut: bool = False,
                 temperature: float = 1.0,
                 cuda_graph: Union[bool, dict] = False,
                 **kwargs) -> None:
        name = type(self).__name__
        if depth not in self.arch_settings:
            raise KeyError(f'{name}: depth must be one of '
                           f'{sorted(self.arch_settings)}, got {depth!r}')
        if num_dynamic_blocks is not None and (
                not isinstance(num_dynamic_blocks, int)
                or num_dynamic_blocks < 0):
            raise ValueError(f'{name}: num_dynamic_blocks must be None (all '
                             f'blocks) or an int >= 0, got '
                             f'{num_dynamic_blocks!r}')
        check_stage_indices(name, kwargs, num_stages=kwargs.get(
            'num_stages', 4))
        self.dynamic_conv_cfg = None if dynamic_conv_cfg is None else \
            backbone_conv_cfg(dynamic_conv_cfg, temperature,
                              kwargs.get('norm_cfg',
                                         dict(type='BN', requires_grad=True)))
        self.num_dynamic_blocks = num_dynamic_blocks
        self.dynamic_shortcut = dynamic_shortcut
        if 'init_cfg' in kwargs:
            kwargs['init_cfg'] = without_empty_pretrained(kwargs['init_cfg'])
        super().__init__(depth, **kwargs)
        setup_cuda_graph(self, cuda_graph)

    def block_is_dynamic(self, index: int) -> bool:
        """Whether the residual block at ``index`` (counted over all stages)
        is dynamic."""
        total = sum(self.stage_blocks)
        if self.dynamic_conv_cfg is None:
            return False
        if self.num_dynamic_blocks is None:
            return True
        return index >= total - self.num_dynamic_blocks

    def train(self, mode: bool = True):
        super().train(mode)
        return self  # mmdet's ResNet.train returns None, nn.Module self

    def make_res_layer(self, **kwargs) -> ResLayer:
        stage = int(round(math.log2(kwargs['planes'] / self.base_channels)))
        first = sum(self.stage_blocks[:stage])
        kwargs['block'] = _BlockFactory(
            kwargs['block'],
            [self.block_is_dynamic(first + i)
             for i in range(kwargs['num_blocks'])], self.dynamic_conv_cfg)
        if self.dynamic_shortcut and self.dynamic_conv_cfg is not None:
            # ResLayer builds the downsample shortcut with this config
            kwargs['conv_cfg'] = self.dynamic_conv_cfg
        return ResLayer(**kwargs)


@register_model
class ODResNet(DynamicResNet):
    """ResNet with ODConv in every conv of every residual block (ODConv
    paper, Sec. 4).

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        kernel_num (int): 1 ("ODConv 1x") or 4 ("4x"). Default: 1.
        reduction (float): Attention width ratio. Default: 1/16.
        Others: see :class:`DynamicResNet` and mmdet's ``ResNet``.
    """

    def __init__(self, depth: int, kernel_num: int = 1,
                 reduction: float = 0.0625, **kwargs) -> None:
        super().__init__(
            depth,
            dict(type='ODConv2d', kernel_num=kernel_num, reduction=reduction),
            **kwargs)


@register_model
class DCDResNet(DynamicResNet):
    """ResNet with DCD in every conv of every residual block: 1x1 convs get
    full DCD, 3x3 convs a 1x1 dynamic residual (channel fusion alone). As in
    the authors' code, the branch of a BasicBlock (ResNet-18/34) pools to
    2x2, that of a Bottleneck to 1x1."""

    def __init__(self, depth: int, **kwargs) -> None:
        block = self.arch_settings.get(depth, (None, ))[0]
        pool_size = 2 if getattr(block, 'expansion', 4) == 1 else 1
        super().__init__(depth, dict(type='DCDConv2d', pool_size=pool_size),
                         **kwargs)


@register_model
class DyConvResNet(DynamicResNet):
    """ResNet with DyConv (4 kernels by default) in every conv but the stem,
    downsample shortcuts included, as DyConv places it."""

    def __init__(self, depth: int, kernel_num: int = 4,
                 reduction: float = 0.25, dynamic_shortcut: bool = True,
                 **kwargs) -> None:
        super().__init__(
            depth,
            dict(type='DyConv2d', kernel_num=kernel_num, reduction=reduction),
            dynamic_shortcut=dynamic_shortcut,
            **kwargs)


@register_model
class CondConvResNet(DynamicResNet):
    """ResNet with CondConv (8 kernels) in its last 3 residual blocks, the
    placement the CondConv paper uses for ResNet."""

    def __init__(self, depth: int, kernel_num: int = 8,
                 num_dynamic_blocks: Optional[int] = 3, **kwargs) -> None:
        super().__init__(
            depth,
            dict(type='CondConv2d', kernel_num=kernel_num),
            num_dynamic_blocks=num_dynamic_blocks,
            **kwargs)
