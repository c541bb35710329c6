from .backbones import *  # noqa: F401,F403
from .backbones import __all__ as _backbones
from .cuda_graph import (CUDAGraphForward, disable_cuda_graph,
                         enable_cuda_graph, get_cuda_graph)

__all__ = _backbones + [
    'CUDAGraphForward', 'enable_cuda_graph', 'disable_cuda_graph',
    'get_cuda_graph'
]
