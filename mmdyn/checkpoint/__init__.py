"""Checkpoints: safe reading, the authors' layouts, checked loading into
mmdyn backbones (with inflation of static weights)."""
from .io import (TRUSTED_CHECKPOINTS_ENV, CheckpointError, extract_state_dict,
                 load_checkpoint_file, save_checkpoint, trust_checkpoints)
from .matching import (CheckpointMismatchError, LoadReport,
                       describe_checkpoint, load_backbone_checkpoint,
                       load_backbone_state_dict)
from .official import (OFFICIAL_CHECKPOINTS, check_pretrained_files,
                       missing_pretrained_message)
from .recognise import recognise_backbone

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'LoadReport',
    'load_checkpoint_file', 'extract_state_dict', 'load_backbone_checkpoint',
    'load_backbone_state_dict', 'describe_checkpoint', 'recognise_backbone',
    'OFFICIAL_CHECKPOINTS', 'check_pretrained_files',
    'missing_pretrained_message', 'save_checkpoint', 'trust_checkpoints',
    'TRUSTED_CHECKPOINTS_ENV'
]
