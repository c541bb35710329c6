"""What wraps any module at run time: CUDA graphs of its forward and
backward (:mod:`.cuda_graph`)."""
from .cuda_graph import (CUDAGraphForward, disable_cuda_graph,
                         enable_cuda_graph, get_cuda_graph)

__all__ = [
    'CUDAGraphForward', 'enable_cuda_graph', 'disable_cuda_graph',
    'get_cuda_graph'
]
