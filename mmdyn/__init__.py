"""mmdyn: dynamic-convolution backbones (ODConv, DCD, DyConv, CondConv) for
MMDetection 3.x. Importing it registers every layer, backbone and hook, and
makes MMEngine load checkpoints weights-only (:mod:`mmdyn._compat`):
``custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)``."""
from ._compat import install_mmengine_integration
from .deploy import fuse_conv_bn
from .engine import IterationSeedHook, TemperatureAnnealingHook
from .layers import (BaseDynamicConv2d, CondConv2d, DCDConv2d, DyConv2d,
                     ODConv2d, set_temperature)
from .models import *  # noqa: F401,F403  (registers the backbones)
from .runtime import disable_cuda_graph, enable_cuda_graph, get_cuda_graph
from .version import __version__

install_mmengine_integration()

__all__ = [
    'ODConv2d', 'DCDConv2d', 'DyConv2d', 'CondConv2d', 'BaseDynamicConv2d',
    'set_temperature', 'fuse_conv_bn', 'TemperatureAnnealingHook',
    'IterationSeedHook',
    'enable_cuda_graph', 'disable_cuda_graph', 'get_cuda_graph',
    '__version__'
]
