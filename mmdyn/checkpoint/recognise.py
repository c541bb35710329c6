"""Telling which backbone a released checkpoint was made for."""
from typing import Dict

from torch import Tensor

from .io import CheckpointError
from .layouts import is_dcd_mobilenet_layout, split_classifier

_RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}
# stem width -> MobileNetV2 widen_factor
_MOBILENET_WIDTHS = {32: 1.0, 24: 0.75, 16: 0.5}


def _kernel_num(state_dict: Dict[str, Tensor]) -> int:
    banks = {v.shape[0] for k, v in state_dict.items()
             if k.endswith('.weight') and v.dim() == 5}
    if len(banks) != 1:
        raise CheckpointError(f'kernel banks of several sizes: {banks}')
    return banks.pop()


def _with_method(family: str, state_dict: Dict[str, Tensor], dcd: bool,
                 **arch) -> dict:
    """Config of ``family`` ('ResNet' / 'MobileNetV2') for the method the
    state dict was trained with."""
    if any('.attention.channel_fc.' in k for k in state_dict):
        return dict(type=f'OD{family}', kernel_num=_kernel_num(state_dict),
                    **arch)
    return dict(type=f'DCD{family}' if dcd else f'mmdet.{family}', **arch)


def recognise_backbone(state_dict: Dict[str, Tensor]) -> dict:
    """The mmdyn (or mmdet) backbone config a state dict was made for, from
    its keys and shapes: ResNet 18-152 or MobileNetV2 1.0/0.75/0.5, static,
    ODConv (with its kernel_num) or DCD."""
    state_dict, _ = split_classifier(state_dict)
    keys = list(state_dict)
    dcd = any(k.endswith('.fc_phi.weight') for k in keys)
    if any(k.startswith('layer1.') for k in keys):
        stages = tuple(
            len({k.split('.')[1] for k in keys if k.startswith(f'layer{i}.')})
            for i in range(1, 5))
        bottleneck = any(k.startswith('layer1.0.conv3') for k in keys)
        depth = _RESNET_DEPTHS.get((stages, bottleneck))
        if depth is None:
            raise CheckpointError(
                f'a ResNet with {stages} blocks per stage is none of depth '
                f'18/34/50/101/152')
        return _with_method('ResNet', state_dict, dcd, depth=depth)
    stem = state_dict.get('features.0.0.weight')
    if stem is not None:
        widen = _MOBILENET_WIDTHS.get(stem.shape[0])
        if widen is None:
            raise CheckpointError(
                f'a MobileNetV2 stem of {stem.shape[0]} channels is none of '
                f'the released widths 1.0/0.75/0.5')
        return _with_method(
            'MobileNetV2', state_dict,
            dcd or is_dcd_mobilenet_layout(state_dict), widen_factor=widen)
    raise CheckpointError(
        'not a ResNet or MobileNetV2 checkpoint of a known layout (no '
        f'"layer1." or "features.0.0." keys); first keys: {keys[:5]}')
