"""Dynamic convolutions, registered so that ``mmcv.cnn.build_conv_layer``
builds them: ``conv_cfg=dict(type='ODConv2d', kernel_num=4)``."""
from .base import DynamicConv2d, set_temperature
from .bias_into_norm import conv_then_norm
from .condconv import CondConv2d, CondConvRouting
from .dcd import DCDConv2d, DCDDynamics
from .dyconv import DyConv2d, DyConvAttention
from .kernel_bank import KernelBankConv2d
from .odconv import ODAttentions, ODConv2d, ODConvAttention

__all__ = [
    'DynamicConv2d', 'KernelBankConv2d', 'ODConv2d', 'ODConvAttention',
    'ODAttentions', 'DCDConv2d', 'DCDDynamics', 'DyConv2d', 'DyConvAttention',
    'CondConv2d', 'CondConvRouting', 'set_temperature', 'conv_then_norm'
]
