"""Reading checkpoint files safely and finding their state dict."""
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from torch import Tensor

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


#: What MMEngine's own training checkpoints hold besides tensors and plain
#: Python values (the message hub's HistoryBuffers of numpy arrays and
#: scalars): the only types weights-only loading is extended with.
TRAINING_CHECKPOINT_GLOBALS = [
    HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype,
    *sorted({type(np.dtype(t)) for t in np.typecodes['All'] if t not in 'OV'},
            key=lambda cls: cls.__name__)
]


def safe_torch_load(filename, map_location='cpu'):
    """``torch.load(weights_only=True)`` that also accepts MMEngine's
    training checkpoints (:data:`TRAINING_CHECKPOINT_GLOBALS`) and nothing
    else."""
    with torch.serialization.safe_globals(TRAINING_CHECKPOINT_GLOBALS):
        return torch.load(filename, map_location=map_location,
                          weights_only=True)


def load_checkpoint_file(filename: str, map_location='cpu'):
    """Load a checkpoint without running code hidden in it.

    Local files go through ``torch.load(weights_only=True)``; ``scheme://``
    names (``torchvision://``, ``open-mmlab://``, ...) through MMEngine's
    loaders.
    """
    if '://' in filename:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(filename, map_location)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        return safe_torch_load(filename, map_location)
    except Exception as error:  # unpickling, zip, EOF, format errors
        refused = re.search(r'[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)',
                            str(error))
        if refused:
            raise CheckpointError(
                f'{filename} holds a Python object of type '
                f'{refused.group(1)}, which weights-only loading refuses '
                f'because unpickling it could run code. Weights (the '
                f"authors' releases, torchvision, MMDetection) do not need "
                f'it. If you trust the file, re-save its state dict with '
                f'torch.load(..., weights_only=False) yourself.') from None
        first_line = str(error).strip().splitlines()[0][:200] if str(
            error).strip() else ''
        raise CheckpointError(
            f'{filename} is not a readable PyTorch checkpoint (truncated or '
            f'corrupt?): {type(error).__name__}: {first_line}') from None


def extract_state_dict(checkpoint, filename: str = 'checkpoint'
                       ) -> Dict[str, Tensor]:
    """The parameters of a loaded checkpoint: its ``state_dict`` (or
    ``model``) entry, or the checkpoint itself when it is a plain dict of
    tensors; a ``module.`` prefix (DataParallel) is removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f'{filename} holds a {type(checkpoint).__name__}, not a dict of '
            f'weights')
    for entry in ('state_dict', 'model'):
        if isinstance(checkpoint.get(entry), dict):
            checkpoint = checkpoint[entry]
            break
    not_tensors = [k for k, v in checkpoint.items()
                   if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(
            f'{filename} has no state dict: expected a "state_dict" or '
            f'"model" entry or a dict of tensors; its keys are '
            f'{sorted(map(str, checkpoint))[:10]}')
    if not checkpoint:
        raise CheckpointError(f'{filename} has an empty state dict')
    return OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in checkpoint.items())


def save_checkpoint(checkpoint: dict, filename: str) -> None:
    """``torch.save`` to a temporary file renamed into place, so that an
    interrupted run never leaves a half-written ``filename``."""
    os.makedirs(osp.dirname(osp.abspath(filename)), exist_ok=True)
    tmp = filename + '.tmp'
    torch.save(checkpoint, tmp)
    os.replace(tmp, filename)
