"""Helpers shared by the dynamic backbones."""
import inspect
from typing import Union

from torch import nn

from ...runtime import CUDAGraphForward, enable_cuda_graph

#: dynamic conv types whose attention branch has a norm layer
_NORMED_TYPES = ('ODConv2d', 'DCDConv2d')


def backbone_conv_cfg(dynamic_conv_cfg: dict, temperature: float,
                      norm_cfg: dict) -> dict:
    """The conv config a backbone gives its dynamic layers: the backbone's
    temperature and, for layers whose attention has a norm, the backbone's
    ``norm_cfg`` (so ``SyncBN`` or frozen norms reach the attention too)
    unless the conv config names its own."""
    cfg = dict(dynamic_conv_cfg, temperature=temperature)
    if cfg['type'] in _NORMED_TYPES:
        cfg.setdefault('norm_cfg', norm_cfg)
    return cfg


def check_stage_indices(name: str, kwargs: dict, num_stages: int) -> None:
    """Clear errors for ``out_indices`` and ``frozen_stages`` that name a
    stage the backbone does not have."""
    out_indices = kwargs.get('out_indices', ())
    if not all(isinstance(i, int) and 0 <= i < num_stages
               for i in out_indices):
        raise ValueError(f'{name}: out_indices must be stage indices in '
                         f'0..{num_stages - 1}, got {out_indices!r}')
    frozen = kwargs.get('frozen_stages', -1)
    if not isinstance(frozen, int) or not -1 <= frozen <= num_stages:
        raise ValueError(f'{name}: frozen_stages must be -1 (none) or '
                         f'0..{num_stages} (stem and that many stages), got '
                         f'{frozen!r}')


#: the keys of a ``cuda_graph`` dict: the arguments of CUDAGraphForward
_CUDA_GRAPH_KEYS = tuple(
    name for name in inspect.signature(CUDAGraphForward).parameters
    if name != 'module')


def setup_cuda_graph(backbone: nn.Module, cuda_graph: Union[bool,
                                                            dict]) -> None:
    """Apply a backbone's ``cuda_graph`` argument: False (or None) leaves
    it eager, True or a dict of :class:`mmdyn.runtime.CUDAGraphForward`
    arguments makes it replay CUDA graphs."""
    name = type(backbone).__name__
    if cuda_graph is None or cuda_graph is False:
        return
    if cuda_graph is True:
        cuda_graph = {}
    if not isinstance(cuda_graph, dict):
        raise ValueError(
            f'{name}: cuda_graph must be True, False or a dict with keys '
            f'from {_CUDA_GRAPH_KEYS}, got {cuda_graph!r}')
    unknown = sorted(set(cuda_graph) - set(_CUDA_GRAPH_KEYS))
    if unknown:
        raise ValueError(f'{name}: cuda_graph has unknown keys {unknown}; '
                         f'it takes {_CUDA_GRAPH_KEYS}')
    enable_cuda_graph(backbone, **cuda_graph)
