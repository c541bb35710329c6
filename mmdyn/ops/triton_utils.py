"""What the fused ops share outside their GPU kernels: whether Triton is
there, and the small arithmetic of launching the kernels."""
import functools
import os

import torch

from ..layers.functional import accumulation_dtype


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter
    (``TRITON_INTERPRET=1``, read when the kernels are first imported)."""
    return os.environ.get('TRITON_INTERPRET') == '1'


def next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def accumulator(dtype: torch.dtype):
    """The Triton type the kernels accumulate in for inputs of ``dtype``:
    that of :func:`mmdyn.layers.functional.accumulation_dtype`."""
    import triton.language as tl
    return {torch.float64: tl.float64, torch.float32: tl.float32}[
        accumulation_dtype(dtype)]
