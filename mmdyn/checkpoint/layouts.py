"""Key layouts of the checkpoints mmdyn backbones load, mapped to mmdyn's.

ResNet checkpoints (the ODConv and DCD releases, torchvision, MMDetection)
already use mmdyn's names. MobileNetV2 releases use torchvision's
``features.N`` layout (ODConv, torchvision) or DCD's own; mmdyn's
MobileNetV2 uses MMDetection's (``conv1``, ``layerS.B.{expand_conv,
depthwise_conv,linear_conv}.{conv,bn}``, ``conv2``).
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

#: classifier heads of the released models; detection does not use them
CLASSIFIER_PREFIXES = ('fc.', 'classifier.', 'head.')

_EXPAND, _DW, _LINEAR = 'expand_conv', 'depthwise_conv', 'linear_conv'
# position in a released block's `conv` sequence -> (ConvModule, part), for
# a block with / without the 1x1 expansion
_TORCHVISION_BLOCK = {
    True: {'0.0': (_EXPAND, 'conv'), '0.1': (_EXPAND, 'bn'),
           '1.0': (_DW, 'conv'), '1.1': (_DW, 'bn'),
           '2': (_LINEAR, 'conv'), '3': (_LINEAR, 'bn')},
    False: {'0.0': (_DW, 'conv'), '0.1': (_DW, 'bn'),
            '1': (_LINEAR, 'conv'), '2': (_LINEAR, 'bn')},
}
_DCD_BLOCK = {
    True: {'0': (_EXPAND, 'conv'), '1': (_EXPAND, 'bn'), '3': (_DW, 'conv'),
           '4': (_DW, 'bn'), '6': (_LINEAR, 'conv'), '7': (_LINEAR, 'bn')},
    False: {'0': (_DW, 'conv'), '1': (_DW, 'bn'), '3': (_LINEAR, 'conv'),
            '4': (_LINEAR, 'bn')},
}
_DCD_RENAMES = {'conv_q.': 'q.', 'conv_p.': 'p.'}


def split_classifier(state_dict: Dict) -> Tuple[Dict, List[str]]:
    kept = OrderedDict((k, v) for k, v in state_dict.items()
                       if not k.startswith(CLASSIFIER_PREFIXES))
    return kept, [k for k in state_dict if k not in kept]


def is_dcd_mobilenet_layout(state_dict: Dict) -> bool:
    return any(k.startswith('conv.0.') for k in state_dict)


def mobilenet_v2_to_mmdyn(state_dict: Dict,
                          arch_settings: List[List[int]]) -> Dict:
    """Map a ``features.N`` MobileNetV2 state dict (torchvision / ODConv, or
    DCD with its final ``conv``) to mmdyn's layout. Keys that fit no rule
    are kept as they are (and reported as unexpected by the loader)."""
    dcd = is_dcd_mobilenet_layout(state_dict)
    table = _DCD_BLOCK if dcd else _TORCHVISION_BLOCK
    blocks = []  # features index - 1 -> (name, has_expansion)
    for stage, (ratio, _, num, _) in enumerate(arch_settings):
        blocks += [(f'layer{stage + 1}.{i}', ratio != 1) for i in range(num)]
    last = len(blocks) + 1
    mapped = OrderedDict()
    for key, value in state_dict.items():
        new = _map_mobilenet_key(key, blocks, last, table, dcd)
        if dcd:
            for old, rename in _DCD_RENAMES.items():
                new = new.replace(f'.conv.{old}', f'.conv.{rename}')
        mapped[new] = value
    return mapped


def _map_mobilenet_key(key, blocks, last, table, dcd):
    match = re.match(r'features\.(\d+)\.(.*)', key)
    if match is None:
        if dcd and key.startswith('conv.'):  # DCD's last 1x1 conv
            part = {'0': 'conv', '1': 'bn'}.get(key.split('.')[1])
            rest = key.split('.', 2)[2]
            return f'conv2.{part}.{rest}' if part else key
        return key
    index, rest = int(match.group(1)), match.group(2)
    if index == 0 or index == last:
        module = 'conv1' if index == 0 else 'conv2'
        part = {'0': 'conv', '1': 'bn'}.get(rest.split('.')[0])
        return f'{module}.{part}.{rest.split(".", 1)[1]}' if part else key
    if index > len(blocks) or not rest.startswith('conv.'):
        return key
    name, expands = blocks[index - 1]
    position = rest[len('conv.'):]
    for length in (2, 1):  # 'i.j.<param>' before 'i.<param>'
        head = '.'.join(position.split('.')[:length])
        if head in table[expands]:
            module, part = table[expands][head]
            tail = position.split('.', length)[length]
            return f'{name}.{module}.{part}.{tail}'
    return key
