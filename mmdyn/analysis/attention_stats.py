"""Recording what the attentions of every dynamic conv in a model do over a
set of images, and summarising it per layer (the ODConv paper's Fig. 6, the
DCD paper's Fig. 6)."""
from collections import defaultdict
from typing import Dict, List

import torch
from torch import Tensor, nn

from ..layers import BaseDynamicConv2d

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class AttentionRecorder:
    """Records :meth:`BaseDynamicConv2d.attention_maps` of every dynamic
    conv of ``model`` on each forward pass, inside a ``with`` block.

    ``records[layer][name]`` is a list of (B, ...) float32 CPU tensors, one
    per forward pass; ``input_variance[layer]`` the variance of the layer's
    input feature map per pass (DCD's normalisation of Φ's variance).
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = {
            name: module
            for name, module in model.named_modules()
            if isinstance(module, BaseDynamicConv2d)
        }
        if not self.layers:
            raise ValueError(
                f'{type(model).__name__} has no dynamic convolution '
                '(ODConv2d, DCDConv2d, DyConv2d, CondConv2d) to record')
        self.records: Dict[str, Dict[str, List[Tensor]]] = defaultdict(
            lambda: defaultdict(list))
        self.input_variance: Dict[str, List[float]] = defaultdict(list)
        self._handles = []

    def _hook(self, name: str):

        def record(module, inputs):
            x = inputs[0]
            with torch.no_grad():
                for kind, value in module.attention_maps(x).items():
                    self.records[name][kind].append(
                        value.detach().float().cpu())
                self.input_variance[name].append(float(x.float().var()))

        return record

    def __enter__(self) -> 'AttentionRecorder':
        self._handles = [
            layer.register_forward_pre_hook(self._hook(name))
            for name, layer in self.layers.items()
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _distribution(values: Tensor) -> dict:
    flat = values.flatten().double()
    if flat.numel() > 2**24:  # torch.quantile's limit
        flat = flat[torch.linspace(0, flat.numel() - 1, 2**24).long()]
    stats = dict(count=int(values.numel()), mean=float(flat.mean()),
                 std=float(flat.std()) if flat.numel() > 1 else 0.0,
                 min=float(flat.min()), max=float(flat.max()))
    for q, value in zip(QUANTILES,
                        torch.quantile(flat, torch.tensor(QUANTILES,
                                                          dtype=flat.dtype))):
        stats[f'q{int(q * 100):02d}'] = float(value)
    return stats


def summarize(recorder: AttentionRecorder) -> List[dict]:
    """One entry per dynamic layer (in model order): its name, type, shape
    and, per attention, the distribution of its values over all images
    (count, mean, std, min, max, quantiles) plus

    - ``per_position`` for ``spatial`` (mean per kernel tap, row-major) and
      ``per_kernel`` for ``kernel``: means over images;
    - for DCD's ``phi``, ``normalized_variance``: the variance of each entry
      of Φ(x) over images, averaged over entries and divided by the variance
      of the layer's input (σΦ of the DCD paper, Sec. 5.4).
    """
    summary = []
    for name, layer in recorder.layers.items():
        records = recorder.records.get(name)
        if not records:
            continue
        entry = dict(layer=name, type=type(layer).__name__,
                     in_channels=layer.in_channels,
                     out_channels=layer.out_channels,
                     kernel_size=list(layer.kernel_size),
                     images=int(sum(v.shape[0]
                                    for v in next(iter(records.values())))),
                     attentions={})
        for kind, batches in records.items():
            values = torch.cat(batches)
            stats = _distribution(values)
            if kind == 'spatial':
                stats['per_position'] = values.mean(0).tolist()
            elif kind == 'kernel':
                stats['per_kernel'] = values.mean(0).tolist()
            elif kind == 'phi':
                variance = values.flatten(1).var(0).mean() if len(
                    values) > 1 else torch.tensor(0.0)
                input_variance = sum(recorder.input_variance[name]) / len(
                    recorder.input_variance[name])
                stats['normalized_variance'] = float(variance) / max(
                    input_variance, 1e-12)
            entry['attentions'][kind] = stats
        summary.append(entry)
    return summary
