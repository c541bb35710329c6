"""Dynamic convolutions as the papers define them, registered so that
``mmcv.cnn.build_conv_layer`` builds them:
``conv_cfg=dict(type='ODConv2d', kernel_num=4)``."""
from .base import BaseDynamicConv2d, set_temperature
from .condconv import CondConv2d, CondConvRouting
from .dcd import DCDConv2d, DCDDynamics
from .dyconv import DyConv2d, DyConvAttention
from .odconv import ODAttentions, ODConv2d, ODConvAttention
from .weight_bank import WeightBankConv2d

__all__ = [
    'BaseDynamicConv2d', 'WeightBankConv2d', 'ODConv2d', 'ODConvAttention',
    'ODAttentions', 'DCDConv2d', 'DCDDynamics', 'DyConv2d', 'DyConvAttention',
    'CondConv2d', 'CondConvRouting', 'set_temperature'
]
