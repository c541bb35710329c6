"""mmdyn: dynamic-convolution backbones (ODConv, DCD, DyConv, CondConv) for
MMDetection 3.x. Importing it registers every layer and backbone:
``custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)``."""
from .layers import (CondConv2d, DCDConv2d, DyConv2d, DynamicConv2d,
                     ODConv2d, set_temperature)
from .engine import TemperatureAnnealingHook
from .models import *  # noqa: F401,F403  (registers the backbones)
from .models import disable_cuda_graph, enable_cuda_graph
from .version import __version__

__all__ = [
    'ODConv2d', 'DCDConv2d', 'DyConv2d', 'CondConv2d', 'DynamicConv2d',
    'set_temperature', 'TemperatureAnnealingHook', 'enable_cuda_graph',
    'disable_cuda_graph', '__version__'
]
