"""MMEngine's training checkpoints, weights-only.

On torch >= 2.6 ``torch.load`` defaults to ``weights_only=True`` and MMEngine
0.10's own checkpoints fail to load (``--resume``, ``load_from``,
``tools/test.py``). Importing mmdyn fixes that without turning the safety
off:

* MMEngine's loader of local files is replaced by one that loads
  weights-only with exactly :data:`TRAINING_CHECKPOINT_GLOBALS` allowed;
* MMEngine's loaders of ``http(s)://``, ``torchvision://``,
  ``open-mmlab://``, ``mmcls://``, ``pavi://``, ``s3://`` and ``petrel://``
  names load weights-only with the same allow-list, and their refusals name
  the type. The downloads go through ``torch.hub.load_state_dict_from_url``,
  whose default is ``weights_only=False`` even on torch 2.6+: MMEngine's
  ``load_url`` is replaced by a weights-only one;
* ``HistoryBuffer`` no longer pickles its four default statistics methods
  (``__setstate__`` registers them again anyway): pickled, they are
  ``getattr`` calls, which no weights-only loader may allow.
"""
import functools
import os.path as osp
import pickle

import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from .io import (TRAINING_CHECKPOINT_GLOBALS, CheckpointError,
                 load_checkpoint_file, refusal_message, refused_type)

_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_state(self) -> dict:
    state = dict(self.__dict__)
    custom = {name: method
              for name, method in self._statistics_methods.items()
              if name not in _DEFAULT_STATISTICS}
    state.pop('statistics_methods', None)
    if custom:
        state['statistics_methods'] = custom
    return state


HistoryBuffer.__getstate__ = _history_buffer_state


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_local_checkpoint(filename, map_location):
    """Weights-only loader of local files for MMEngine (``load_from``,
    ``--resume``, ``tools/test.py``); refuses anything beyond
    :data:`mmdyn.checkpoint.io.TRAINING_CHECKPOINT_GLOBALS` with a
    :class:`~mmdyn.checkpoint.CheckpointError` naming the type."""
    return load_checkpoint_file(osp.expanduser(filename), map_location)


def _weights_only_download(loader):
    """``loader`` with :data:`TRAINING_CHECKPOINT_GLOBALS` allowed to the
    weights-only ``torch.load`` it ends in (torch >= 2.6 default), and its
    refusals turned into a :class:`~mmdyn.checkpoint.CheckpointError`."""

    @functools.wraps(loader)
    def load(filename, *args, **kwargs):
        try:
            with torch.serialization.safe_globals(
                    TRAINING_CHECKPOINT_GLOBALS):
                return loader(filename, *args, **kwargs)
        except pickle.UnpicklingError as error:
            type_name = refused_type(error)
            if type_name is None:
                raise
            raise CheckpointError(refusal_message(filename,
                                                  type_name)) from None

    return load


mmengine_checkpoint.load_url = functools.partial(
    torch.hub.load_state_dict_from_url, weights_only=True)

# every scheme MMEngine registers (http(s), torchvision, open-mmlab, mmcls,
# pavi, s3, petrel); the local one ('') is replaced above
for _prefix, _loader in list(CheckpointLoader._schemes.items()):
    if _prefix and not hasattr(_loader, '__wrapped__'):
        CheckpointLoader.register_scheme(
            _prefix, _weights_only_download(_loader), force=True)
