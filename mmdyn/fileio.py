"""Writing files whole or not at all."""
import contextlib
import os
import os.path as osp
import uuid
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = '.tmp') -> Iterator[str]:
    """A temporary path beside ``path`` to write to: when the ``with`` block
    completes it is renamed to ``path`` (replacing a file there), and if
    the block raises it is removed. ``path`` is thus a whole file or is
    left as it was, whatever stops the writing (an error, a full disk, a
    killed process leaves at most a hidden temporary file).

    Example::

        with atomic_path('model.onnx', suffix='.onnx') as tmp:
            torch.onnx.export(model, args, tmp)
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.'
                   f'{uuid.uuid4().hex[:8]}{suffix}')
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
