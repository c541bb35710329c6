"""Reading checkpoint files safely and finding their state dict."""
import codecs
import os
import os.path as osp
import re
import shutil
import warnings
from collections import OrderedDict
from typing import Dict, Iterable, Optional, Set

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from torch import Tensor

from .._compat import numpy_pickle_globals
from ..fileio import atomic_path


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


#: What MMEngine's own training checkpoints hold besides tensors and plain
#: Python values (the message hub's HistoryBuffers of numpy arrays and
#: scalars): the only types weights-only loading is extended with.
TRAINING_CHECKPOINT_GLOBALS = [
    HistoryBuffer, *numpy_pickle_globals(), np.ndarray, np.dtype,
    *sorted({type(np.dtype(t)) for t in np.typecodes['All'] if t not in 'OV'},
            key=lambda cls: cls.__name__)
]


#: Environment variable listing checkpoint files (``os.pathsep``-separated
#: paths) that may be unpickled in full if weights-only loading refuses
#: them; ``--trust-checkpoint FILE`` of mmdyn's tools sets it.
TRUSTED_CHECKPOINTS_ENV = 'MMDYN_TRUSTED_CHECKPOINTS'


def trust_checkpoints(filenames: Iterable[str]) -> None:
    """Allow these local files to be unpickled in full (running whatever
    code they hold) when weights-only loading refuses them. Recorded in
    :data:`TRUSTED_CHECKPOINTS_ENV`, so that processes started from this one
    (data loader workers, ``torchrun`` ranks) trust them too."""
    trusted = _trusted_checkpoints()
    for filename in filenames:
        if '://' in filename:
            raise ValueError(
                f'only local files can be trusted, not {filename}: download '
                f'it, check where it comes from, and trust the local copy')
        trusted.add(_canonical_path(filename))
    os.environ[TRUSTED_CHECKPOINTS_ENV] = os.pathsep.join(sorted(trusted))


def _canonical_path(filename: str) -> str:
    """One name per file, whichever way it was written (``~``, links,
    relative paths), so that trusting and checking agree."""
    return osp.realpath(osp.expanduser(filename))


def _trusted_checkpoints() -> Set[str]:
    listed = os.environ.get(TRUSTED_CHECKPOINTS_ENV, '')
    return {_canonical_path(path) for path in listed.split(os.pathsep)
            if path}


def is_trusted_checkpoint(filename: str) -> bool:
    """Whether ``filename`` was trusted with :func:`trust_checkpoints` (or
    listed in :data:`TRUSTED_CHECKPOINTS_ENV`)."""
    return _canonical_path(filename) in _trusted_checkpoints()


def safe_torch_load(filename, map_location='cpu'):
    """``torch.load(weights_only=True)`` that also accepts MMEngine's
    training checkpoints (:data:`TRAINING_CHECKPOINT_GLOBALS`) and nothing
    else."""
    with torch.serialization.safe_globals(TRAINING_CHECKPOINT_GLOBALS):
        return torch.load(filename, map_location=map_location,
                          weights_only=True)


def refused_type(error: BaseException) -> Optional[str]:
    """The type that weights-only unpickling refused, if that is what
    ``error`` says."""
    refused = re.search(r'[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)',
                        str(error))
    return refused.group(1) if refused else None


def refusal_message(filename: str, type_name: str) -> str:
    """What to tell the user when ``filename`` holds ``type_name``."""
    if '://' in filename:
        how = (f'If you trust its source, download it, and load the local '
               f'copy with --trust-checkpoint FILE (mmdyn\'s tools) or '
               f'{TRUSTED_CHECKPOINTS_ENV}=FILE.')
    else:
        how = (f'If you trust the file (you made it, or know who did), pass '
               f'--trust-checkpoint {filename} to mmdyn\'s tools, or set '
               f'{TRUSTED_CHECKPOINTS_ENV}={filename} in the environment, '
               f'or call mmdyn.checkpoint.trust_checkpoints([...]); see '
               f'docs/checkpoints.md.')
    return (f'{filename} holds a Python object of type {type_name}, which '
            f'weights-only loading refuses because unpickling it could run '
            f'code. Weights (the authors\' releases, torchvision, '
            f'MMDetection, MMEngine training checkpoints) do not need it. '
            f'{how}')


def load_checkpoint_file(filename: str, map_location='cpu'):
    """Load a checkpoint without running code hidden in it.

    Local files go through ``torch.load(weights_only=True)`` (extended with
    :data:`TRAINING_CHECKPOINT_GLOBALS` only); a file that needs anything
    else is refused with a :class:`CheckpointError` naming the type, unless
    it was trusted (:func:`trust_checkpoints`), when it is unpickled in
    full. ``scheme://`` names (``torchvision://``, ``open-mmlab://``, ...)
    go through MMEngine's loaders, which mmdyn makes weights-only too.
    """
    if '://' in filename:
        from mmengine.runner import CheckpointLoader
        return CheckpointLoader.load_checkpoint(filename, map_location)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename}')
    try:
        return safe_torch_load(filename, map_location)
    except Exception as error:  # unpickling, zip, EOF, format errors
        type_name = refused_type(error)
        if type_name and is_trusted_checkpoint(filename):
            warnings.warn(
                f'{filename} holds a {type_name}: unpickling it in full, '
                f'because it is trusted ({TRUSTED_CHECKPOINTS_ENV})')
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        if type_name:
            raise CheckpointError(refusal_message(filename,
                                                  type_name)) from None
        raise CheckpointError(unreadable_message(filename)) from None


#: how many bytes of a file :func:`unreadable_message` looks at
_HEAD = 4096


def unreadable_message(filename: str) -> str:
    """Why ``filename``, which ``torch.load`` could not read, is no
    checkpoint, told from the file itself (PyTorch's own message for such
    files is about weights-only loading, which is not the problem)."""
    size = osp.getsize(filename)
    if size == 0:
        return (f'{filename} is empty (0 bytes), not a PyTorch checkpoint: '
                f'was it saved or downloaded completely?')
    with open(filename, 'rb') as f:
        head = f.read(_HEAD)
    if head.startswith(b'PK'):
        return _zip_message(filename)
    if head.startswith(b'\x80') and len(head) > 1 and head[1] <= 5:
        return (f'{filename} is a pickle (the format of old PyTorch '
                f'checkpoints) that could not be read to its end: '
                f'truncated or corrupt ({size} bytes). Was it saved or '
                f'downloaded completely?')
    text = _as_text(head)
    if text is not None:
        kind = 'an HTML page (a download that returned a web page?)' \
            if text.lstrip().lower().startswith(('<!doctype html', '<html')) \
            else 'a text file'
        first = text.strip().splitlines()[0][:60] if text.strip() else ''
        return (f'{filename} is {kind}, not a PyTorch checkpoint; it begins '
                f'{first!r}.')
    return (f'{filename} is not a PyTorch checkpoint: neither the zip '
            f'archive that torch.save writes nor a pickle (it begins with '
            f'the bytes {head[:8].hex(" ")}).')


def _zip_message(filename: str) -> str:
    """What a file that starts as a zip archive is, for
    :func:`unreadable_message`."""
    import zipfile
    try:
        with zipfile.ZipFile(filename) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return (f'{filename} is a truncated PyTorch checkpoint: its zip '
                f'archive ends before its index. Was it saved or downloaded '
                f'completely?')
    if not any(name.endswith('/data.pkl') or name == 'data.pkl'
               for name in names):
        listed = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
        return (f'{filename} is a zip archive without a data.pkl, not a '
                f'PyTorch checkpoint; it holds {listed or "nothing"}.')
    if damaged is not None:
        return (f'{filename} is a corrupt PyTorch checkpoint: {damaged} in '
                f'its zip archive fails its checksum.')
    return (f'{filename} is a PyTorch checkpoint (zip archive) that PyTorch '
            f'could not read: corrupt, or written by an incompatible '
            f'version.')


def _as_text(head: bytes):
    """``head`` as text if it reads as UTF-8 text without control
    characters (but whitespace), else None. A head cut from a longer file
    may end inside a character: the incremental decoder leaves that out."""
    decoder = codecs.getincrementaldecoder('utf-8')()
    try:
        text = decoder.decode(head, final=len(head) < _HEAD)
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch in '\t\n\r' for ch in text)
    return text if printable == len(text) else None


def save_runner_checkpoint(checkpoint: dict, filename: str,
                           file_client_args=None, backend_args=None) -> None:
    """MMEngine's ``save_checkpoint`` for its Runner (``CheckpointHook``)
    once mmdyn is imported: local files through :func:`save_checkpoint`
    (whole or not at all), anything else through MMEngine's own."""
    if '://' in str(filename) or file_client_args or backend_args:
        from mmengine.runner.checkpoint import \
            save_checkpoint as mmengine_save
        return mmengine_save(checkpoint, filename,
                             file_client_args=file_client_args,
                             backend_args=backend_args)
    save_checkpoint(checkpoint, str(filename))


def load_local_checkpoint(filename: str, map_location):
    """MMEngine's loader of local files (``load_from``, ``--resume``,
    ``tools/test.py``) once mmdyn is imported
    (:func:`mmdyn._compat.install_mmengine_integration`): weights-only, see
    :func:`load_checkpoint_file`."""
    return load_checkpoint_file(osp.expanduser(filename), map_location)


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
    """``torch.save`` to a temporary file in the same folder, renamed into
    place once complete: ``filename`` is a whole checkpoint or is not
    there, whatever stops the save (a full disk, a killed process). A
    failed save removes its temporary file and raises an ``OSError`` that
    names ``filename`` and the space left beside it."""
    try:
        with atomic_path(filename) as tmp:
            torch.save(checkpoint, tmp)
    except OSError as error:
        folder = osp.dirname(osp.abspath(filename))
        free = shutil.disk_usage(folder).free / 2**20
        raise OSError(
            error.errno, f'could not save the checkpoint {filename} '
            f'({error.strerror or error}); {free:.0f} MiB are free in '
            f'{folder}. Nothing was written: the checkpoints saved before '
            f'it are as they were.') from error
