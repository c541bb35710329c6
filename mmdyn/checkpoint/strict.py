"""Detector checkpoints checked key by key before MMEngine loads them.

MMEngine's Runner loads ``load_from``, ``--resume`` and ``tools/test.py``'s
checkpoint with ``strict=False``: a checkpoint of another architecture
loads in part, the rest of the model keeps its random initialisation, and
the run trains or evaluates it after a printed warning. Once mmdyn is
imported (:func:`mmdyn._compat.install_mmengine_integration`), every such
load first compares the checkpoint's keys and shapes with the model's and
stops with a :class:`~mmdyn.checkpoint.CheckpointMismatchError` that names
the mismatch, what the file looks like and how to fix it, before any
training step or evaluation. A config key opts out for deliberate partial
loads (e.g. another number of classes)::

    partial_load = True   # or --cfg-options partial_load=True, --partial-load

and the log then lists what was left unloaded.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

from torch import Tensor, nn

from .detector import split_detector_state_dict
from .io import CheckpointError
from .matching import (CheckpointMismatchError, describe_checkpoint,
                       key_problems)

#: the config key that allows a partial load
PARTIAL_LOAD_KEY = 'partial_load'


def checkpoint_state_dict(checkpoint, revise_keys: Sequence[Tuple[str, str]]
                          ) -> Dict[str, Tensor]:
    """The state dict a Runner loads from ``checkpoint``: its
    ``state_dict`` entry (or itself), keys revised as MMEngine revises
    them."""
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else checkpoint
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f'the checkpoint holds a {type(state_dict).__name__}, not a dict '
            f'of weights')
    revised = OrderedDict()
    for key, value in state_dict.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        revised[key] = value
    return revised


def compare(model: nn.Module, state_dict: Dict[str, Tensor]
            ) -> Tuple[List[str], List[str], List[str]]:
    """(shape mismatches, model keys the checkpoint lacks, checkpoint keys
    the model has no place for); BatchNorms' ``num_batches_tracked``
    counters are not required."""
    own = model.state_dict()
    mismatched = [
        f'{key}: checkpoint {tuple(value.shape)} vs model '
        f'{tuple(own[key].shape)}' for key, value in state_dict.items()
        if key in own and hasattr(value, 'shape')
        and tuple(value.shape) != tuple(own[key].shape)
    ]
    missing = [key for key in own if key not in state_dict
               and not key.endswith('num_batches_tracked')]
    unexpected = [key for key in state_dict if key not in own]
    return mismatched, missing, unexpected


def _what_it_is(model: nn.Module, state_dict: Dict[str, Tensor]) -> str:
    """A guess of what the checkpoint is, and the fix it calls for."""
    try:
        backbone, _ = split_detector_state_dict(state_dict)
    except CheckpointError:
        return ('It has no "backbone." keys: it is not a checkpoint of a '
                'whole detector (a backbone alone loads through the '
                "backbone's init_cfg=dict(type='Pretrained', "
                'checkpoint=...)).')
    if any(k.startswith('features.') for k in backbone):
        return ("Its backbone is in the 'features.N' layout of the ODConv / "
                'DCD authors\' code: it is an authors\' MMDetection-2 '
                'detector. Convert it once with python3 '
                'tools/model_converters/mmdet2_detector_to_mmdyn.py FILE '
                'OUT.pth and load OUT.pth.')
    own_backbone = getattr(model, 'backbone', None)
    ours = type(own_backbone).__name__ if own_backbone is not None else '-'
    text = (f'Its backbone looks like {describe_checkpoint(backbone)}; the '
            f"config's backbone is {ours}")
    conv_cfg = getattr(own_backbone, 'dynamic_conv_cfg', None)
    if isinstance(conv_cfg, dict) and 'kernel_num' in conv_cfg:
        text += f' with kernel_num={conv_cfg["kernel_num"]}'
    return text + ('. Load it with the config it was trained with, or set '
                   'the backbone (type, depth / widen_factor, kernel_num) '
                   'to what the file holds.')


def mismatch_message(model: nn.Module, state_dict: Dict[str, Tensor],
                     filename: str, mismatched: List[str],
                     missing: List[str], unexpected: List[str]) -> str:
    lines = [f'{filename} does not fit the model of this config '
             f'({type(model).__name__}); nothing was loaded.']
    lines += key_problems('model', mismatched, missing, unexpected)
    lines.append(_what_it_is(model, state_dict))
    lines.append(f'To load what fits on purpose (e.g. another number of '
                 f'classes), set {PARTIAL_LOAD_KEY}=True in the config '
                 f'(--cfg-options {PARTIAL_LOAD_KEY}=True); the log then '
                 f'lists what was left unloaded.')
    return '\n'.join(lines)


def loaded_module(model: nn.Module) -> nn.Module:
    """The module a checkpoint's weights go into: inside DDP-like wrappers
    and test-time-augmentation models (``tools/test.py --tta``), as
    MMEngine's ``load_state_dict`` unwraps them."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def check_detector_checkpoint(model: nn.Module, checkpoint, filename: str,
                              revise_keys: Sequence[Tuple[str, str]],
                              partial: bool, logger) -> None:
    """Raise :class:`CheckpointMismatchError` if ``checkpoint`` does not fit
    ``model`` key for key and shape for shape; with ``partial``, log what
    will be left unloaded instead."""
    model = loaded_module(model)
    state_dict = checkpoint_state_dict(checkpoint, revise_keys)
    mismatched, missing, unexpected = compare(model, state_dict)
    if not (mismatched or missing or unexpected):
        return
    if not partial:
        raise CheckpointMismatchError(
            mismatch_message(model, state_dict, filename, mismatched,
                             missing, unexpected))
    lines = [f'{PARTIAL_LOAD_KEY}=True: {filename} is loaded in part; these '
             f'stay as the model was initialised:']
    lines += [f'  shape mismatch (kept the model\'s): {key}'
              for key in mismatched]
    lines += [f'  not in the checkpoint: {key}' for key in missing]
    lines += [f'  in the checkpoint only (not loaded): {key}'
              for key in unexpected]
    logger.warning('\n'.join(lines))
