"""Loading a state dict into a dynamic backbone, checking every key and
shape, and inflating static conv weights into dynamic layers."""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from torch import Tensor, nn

from ..layers import BaseDynamicConv2d, set_temperature
from .io import CheckpointError, extract_state_dict, load_checkpoint_file
from .layouts import mobilenet_v2_to_mmdyn, split_classifier
from .official import is_missing_local_file, missing_pretrained_message

#: shown per kind of problem in an error message
_MAX_LISTED = 10


@dataclass
class LoadReport:
    """What loading a checkpoint into a backbone did."""
    source: str
    loaded: int = 0  # tensors taken as they are
    inflated: List[str] = field(default_factory=list)  # layers from static
    dropped: List[str] = field(default_factory=list)  # classifier keys
    layout: str = 'mmdyn'

    def summary(self) -> str:
        text = (f'loaded {self.source} ({self.layout} layout): '
                f'{self.loaded} tensors')
        if self.inflated:
            text += (f', {len(self.inflated)} dynamic layers started from '
                     f'static kernels (attention at its start state)')
        if self.dropped:
            text += (f', dropped {len(self.dropped)} classifier keys '
                     f'({_listing(self.dropped)})')
        return text


class CheckpointMismatchError(CheckpointError):
    """Keys or shapes of a checkpoint do not fit the backbone."""


def _listing(items: List[str]) -> str:
    shown = ', '.join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f', ... ({more} more)' if more > 0 else '')


def describe_checkpoint(state_dict: Dict[str, Tensor]) -> str:
    """A guess of the method and kernel count a state dict was made with,
    for error messages."""
    keys = list(state_dict)
    if any('.attention.channel_fc.' in k for k in keys):
        banks = [v.shape[0] for k, v in state_dict.items()
                 if k.endswith('.weight') and v.dim() == 5]
        return f'ODConv (kernel_num={max(banks, default="?")})'
    if any(k.endswith('.fc_phi.weight') for k in keys):
        return 'DCD'
    if any('.attention.fc2.' in k for k in keys):
        return 'DyConv'
    if any(k.endswith('.attention.fc.weight') and state_dict[k].dim() == 2
           for k in keys):
        return 'CondConv'
    return 'a static network'


def _static_shape(layer: BaseDynamicConv2d) -> Tuple[int, ...]:
    return (layer.out_channels, layer.in_channels // layer.groups,
            *layer.kernel_size)


def _to_backbone_layout(backbone: nn.Module, state_dict: Dict,
                        prefix: Optional[str]) -> Tuple[Dict, str]:
    own = {k.split('.')[0] for k in backbone.state_dict()}
    if prefix:
        state_dict = OrderedDict((k[len(prefix):], v)
                                 for k, v in state_dict.items()
                                 if k.startswith(prefix))
    elif not any(k.split('.')[0] in own for k in state_dict) and any(
            k.startswith('backbone.') for k in state_dict):
        state_dict = OrderedDict((k[len('backbone.'):], v)
                                 for k, v in state_dict.items()
                                 if k.startswith('backbone.'))
    arch = getattr(backbone, 'arch_settings', None)
    if isinstance(arch, list) and any(k.startswith('features.')
                                      for k in state_dict):
        return mobilenet_v2_to_mmdyn(state_dict, arch), 'features.N'
    return state_dict, 'mmdyn'


def load_backbone_state_dict(backbone: nn.Module,
                             state_dict: Dict[str, Tensor],
                             source: str = 'state dict',
                             prefix: Optional[str] = None) -> LoadReport:
    """Load ``state_dict`` into ``backbone``, refusing anything that does not
    fit.

    Every backbone key must be in the checkpoint with its shape, except for a
    dynamic layer that the checkpoint holds as a static conv (one
    ``<layer>.weight`` of the static shape): that layer is inflated with
    :meth:`BaseDynamicConv2d.load_static_weight`. Classifier keys are dropped
    and reported; any other key the backbone has no place for is an error.
    Every dynamic layer keeps the temperature the backbone was built with.

    Raises:
        CheckpointMismatchError: listing missing keys, unexpected keys and
            shape mismatches, and what the checkpoint looks like.
    """
    report = LoadReport(source=source)
    state_dict, dropped = split_classifier(state_dict)
    report.dropped = dropped
    state_dict, report.layout = _to_backbone_layout(backbone, state_dict,
                                                    prefix)
    own = backbone.state_dict()
    used, missing, mismatched = set(), [], []
    values = OrderedDict()
    static_kernels = {}
    for name, layer in backbone.named_modules():
        if not isinstance(layer, BaseDynamicConv2d):
            continue
        layer_keys = [k for k in own if k.startswith(name + '.')]
        has_dynamic = any(k in state_dict for k in layer_keys
                          if k not in (f'{name}.weight', f'{name}.bias'))
        weight = state_dict.get(f'{name}.weight')
        if not has_dynamic and weight is not None and tuple(
                weight.shape) == _static_shape(layer):
            static_kernels[name] = (weight, state_dict.get(f'{name}.bias'))
            used.update({f'{name}.weight', f'{name}.bias'} & set(state_dict))
    inflated = tuple(name + '.' for name in static_kernels)
    for key, target in own.items():
        if key.startswith(inflated):
            continue
        if key not in state_dict:
            if not key.endswith('num_batches_tracked'):
                missing.append(key)
            continue
        used.add(key)
        if state_dict[key].shape != target.shape:
            mismatched.append(f'{key}: checkpoint '
                              f'{tuple(state_dict[key].shape)}'
                              f' vs backbone {tuple(target.shape)}')
            continue
        values[key] = state_dict[key]
    unexpected = [k for k in state_dict if k not in used]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(_mismatch_message(
            backbone, source, state_dict, missing, unexpected, mismatched))
    backbone.load_state_dict(values, strict=False)
    for name, (weight, bias) in static_kernels.items():
        backbone.get_submodule(name).load_static_weight(weight, bias)
    report.loaded = len(values)
    report.inflated = sorted(static_kernels)
    temperature = getattr(backbone, 'dynamic_conv_cfg', {}).get(
        'temperature', 1.0)
    set_temperature(backbone, temperature)
    return report


def key_problems(owner: str, mismatched: List[str], missing: List[str],
                 unexpected: List[str]) -> List[str]:
    """One line per kind of problem between a checkpoint and the
    ``owner`` ('backbone', 'model') it is loaded into, naming the first keys
    of each."""
    lines = []
    for what, keys in (
            ('shape mismatches', mismatched),
            (f'{owner} keys missing from the checkpoint', missing),
            (f'checkpoint keys the {owner} has no place for', unexpected)):
        if keys:
            lines.append(f'{len(keys)} {what}: {_listing(keys)}')
    return lines


def _mismatch_message(backbone, source, state_dict, missing, unexpected,
                      mismatched) -> str:
    lines = [f'{source} does not fit {type(backbone).__name__}: it looks '
             f'like {describe_checkpoint(state_dict)}.']
    lines += key_problems('backbone', mismatched, missing, unexpected)
    lines.append('Check the method, depth / widen_factor and kernel_num of '
                 'the backbone config against the checkpoint; a static '
                 'ImageNet checkpoint of the same architecture also loads '
                 '(inflation).')
    return '\n'.join(lines)


def load_backbone_checkpoint(backbone: nn.Module, filename: str,
                             prefix: Optional[str] = None,
                             map_location='cpu') -> LoadReport:
    """Read ``filename`` safely and load it with
    :func:`load_backbone_state_dict`. A missing local file raises
    ``FileNotFoundError`` saying where it comes from and how to start
    without it."""
    if is_missing_local_file(filename):
        raise FileNotFoundError(
            missing_pretrained_message(
                filename, type(backbone).__name__,
                getattr(backbone, 'depth', None),
                getattr(backbone, 'widen_factor', None)))
    state_dict = extract_state_dict(
        load_checkpoint_file(filename, map_location), filename)
    return load_backbone_state_dict(backbone, state_dict, filename, prefix)
