"""MMEngine's training checkpoints, weights-only.

On torch >= 2.6 ``torch.load`` defaults to ``weights_only=True`` and MMEngine
0.10's own checkpoints fail to load (``--resume``, ``load_from``,
``tools/test.py``). Importing mmdyn fixes that without turning the safety
off:

* MMEngine's loader of local files is replaced by one that loads
  weights-only with exactly :data:`TRAINING_CHECKPOINT_GLOBALS` allowed;
* ``HistoryBuffer`` no longer pickles its four default statistics methods
  (``__setstate__`` registers them again anyway): pickled, they are
  ``getattr`` calls, which no weights-only loader may allow.
"""
import os.path as osp

from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .io import load_checkpoint_file

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
