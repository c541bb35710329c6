"""MMDetection 2.x detector checkpoints (the ODConv authors' COCO releases)
in MMDetection 3.x detectors with mmdyn backbones."""
from collections import OrderedDict
from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from .io import CheckpointError
from .matching import (CheckpointMismatchError, LoadReport, key_problems,
                       load_backbone_state_dict)
from .recognise import recognise_backbone

_BACKBONE = 'backbone.'

# recognised backbone -> the name part of its Table-4 config
_CONFIG_BACKBONES = {
    ('mmdet.ResNet', None): 'r50',
    ('mmdet.MobileNetV2', None): 'mobilenetv2',
    ('ODResNet', 1): 'r50-odconv-1x',
    ('ODResNet', 4): 'r50-odconv-4x',
    ('ODMobileNetV2', 1): 'mobilenetv2-odconv-1x',
    ('ODMobileNetV2', 4): 'mobilenetv2-odconv-4x',
    ('DCDResNet', None): 'r50-dcd',
    ('DCDMobileNetV2', None): 'mobilenetv2-dcd',
}
_METHOD_DIRS = {'r50': 'baseline', 'mobilenetv2': 'baseline'}


def split_detector_state_dict(state_dict: Dict[str, Tensor]
                              ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """(backbone state dict without its prefix, everything else)."""
    backbone = OrderedDict((k[len(_BACKBONE):], v)
                           for k, v in state_dict.items()
                           if k.startswith(_BACKBONE))
    if not backbone:
        raise CheckpointError(
            'no "backbone." keys: this is not a detector checkpoint (for an '
            'ImageNet backbone checkpoint use official_to_mmdyn.py)')
    rest = OrderedDict((k, v) for k, v in state_dict.items()
                       if not k.startswith(_BACKBONE))
    return backbone, rest


def table_4_config_for(state_dict: Dict[str, Tensor]) -> Optional[str]:
    """The mmdyn config (relative to ``configs/``) a two-stage COCO detector
    checkpoint fits, from its keys and shapes, or None."""
    backbone, rest = split_detector_state_dict(state_dict)
    cfg = recognise_backbone(backbone)
    if cfg.get('depth', 50) != 50 or cfg.get('widen_factor', 1.0) != 1.0:
        return None
    part = _CONFIG_BACKBONES.get((cfg['type'], cfg.get('kernel_num')))
    if part is None:
        return None
    detector = 'mask-rcnn' if any(
        k.startswith('roi_head.mask_head.') for k in rest) else 'faster-rcnn'
    method = _METHOD_DIRS.get(part, part.split('-')[1] if '-' in part else '')
    return f'{method}/{detector}_{part}_fpn_1x_coco.py'


def load_mmdet2_detector_state_dict(detector: nn.Module,
                                    state_dict: Dict[str, Tensor],
                                    source: str = 'state dict'
                                    ) -> LoadReport:
    """Load a 2.x detector state dict into a 3.x ``detector``, checking
    every key and shape.

    The backbone goes through :func:`load_backbone_state_dict` (the authors'
    layouts, classifier dropped); necks and heads of Faster / Mask R-CNN
    kept their names from 2.x to 3.x and must match exactly.
    """
    backbone, rest = split_detector_state_dict(state_dict)
    report = load_backbone_state_dict(detector.backbone, backbone,
                                      f'{source} (backbone)')
    own = OrderedDict((k, v) for k, v in detector.state_dict().items()
                      if not k.startswith(_BACKBONE))
    missing = [k for k in own if k not in rest
               and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in rest if k not in own]
    mismatched = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in rest.items() if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f'{source} does not fit {type(detector).__name__} outside '
                 'its backbone (is it the same detector and number of '
                 'classes as the config?).']
        lines += key_problems('model', mismatched, missing, unexpected)
        raise CheckpointMismatchError('\n'.join(lines))
    detector.load_state_dict(rest, strict=False)
    report.loaded += len(rest)
    return report
