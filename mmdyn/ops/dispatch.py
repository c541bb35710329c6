"""Whether a fused op may stand in for part of a layer's forward: the one
place that decides it.

A fused op (:mod:`mmdyn.ops.odconv_weights`, :mod:`mmdyn.ops.dcd_weights`,
:mod:`mmdyn.ops.per_sample_conv`, :mod:`mmdyn.ops.scaled_weight_conv`,
:mod:`mmdyn.ops.dcd_conv`, :mod:`mmdyn.ops.depthwise_conv`) computes with a
few Triton kernels what the layer's PyTorch operations compute, forward and
backward. It may run only where it computes the same:

- the process allows fused ops (:func:`set_fused_ops`; ``'auto'`` unless
  the environment variable ``MMDYN_FUSED_OPS`` says otherwise);
- Triton is installed, and the input is on a CUDA device (or, in mode
  ``'always'``, on a CPU with Triton's interpreter, ``TRITON_INTERPRET=1``:
  how the tests run the kernels without a GPU);
- the input is not empty, and either autocast is off and the input and
  the parameters the op reads share one dtype, float32 or float64 (the
  kernels compute in it), or autocast is on and those parameters are
  float32, the input float32, float16 or bfloat16: the op then computes in
  float32 from the input's float32 pixel sums, as the layers' attention
  branches do under autocast (:func:`compute_dtype`), and writes the
  weights it makes in the dtype autocast casts the convolution's operands
  to (:func:`conv_dtype`), rounded as autocast's cast would round them;
- no ``torch.compile``, ``torch.jit`` tracing or scripting is running (they
  trace the layer's own operations);
- no hooks are registered on the modules the op stands in for, nor global
  module hooks (the op does not call those modules, so their hooks would
  not run).

The block-diagonal form of :mod:`.block_diagonal_conv` runs no kernel of
its own but asks the same question, so that one predicate decides every
fast path. Each op adds what its kernels need of the layer (e.g.
BatchNorms with running statistics) in its own ``applies`` function, and
calls :func:`may_fuse` for the rest (:mod:`.conv_norm` acts only on the bias
that DCD's op leaves, so that op's decision is its own). The CUDA-graph
runtime (:mod:`mmdyn.runtime`) keys its graphs on :func:`fused_ops_mode`,
so a graph never replays a path that the dispatch would no longer choose.
"""
import contextlib
import os
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from .._compat import has_hooks
from .triton_utils import interpreting, triton_installed

#: the modes of :func:`set_fused_ops`
MODES = ('auto', 'off', 'always')
#: environment variable with the mode a process starts in
ENV_VAR = 'MMDYN_FUSED_OPS'
#: Largest batch at which cuDNN's grouped conv (the batch in its groups) is
#: the fast way to apply per-sample weights (``docs/speed.md``). Up to it,
#: a fused op folds attentions into per-sample weights even where the
#: layer's own operations need none (ODConv's 1x1 layers with one weight,
#: every DCD layer); above it, such a layer computes on the activations
#: around a dense conv, and the per-sample weights a layer does need are
#: applied by :mod:`.per_sample_conv` instead of the grouped conv; at
#: inference some layers are computed whole by its forward kernel
#: (:mod:`.scaled_weight_conv`, :mod:`.dcd_conv`).
MAX_FOLD_BATCH = 8


def _check_mode(mode: str, source: str) -> str:
    if mode not in MODES:
        raise ValueError(f'{source} must be one of {MODES} (auto: fused ops '
                         "on CUDA where Triton is installed; off: never; "
                         'always: also in Triton\'s CPU interpreter), got '
                         f'{mode!r}')
    return mode


_mode = _check_mode(os.environ.get(ENV_VAR, 'auto'), ENV_VAR)


def fused_ops_mode() -> str:
    """The process's mode: ``'auto'``, ``'off'`` or ``'always'``."""
    return _mode


def set_fused_ops(mode: str) -> None:
    """Set the process's mode: ``'auto'`` (the default): fused ops on CUDA
    where Triton is installed; ``'off'``: the layers' PyTorch operations
    everywhere (e.g. to rule the fused ops out when looking for a
    problem); ``'always'``: also on a CPU through Triton's interpreter
    (``TRITON_INTERPRET=1``), and an error where Triton is missing."""
    global _mode
    _mode = _check_mode(mode, 'set_fused_ops: mode')


@contextlib.contextmanager
def fused_ops(mode: str) -> Iterator[None]:
    """:func:`set_fused_ops` for the ``with`` block only."""
    previous = fused_ops_mode()
    set_fused_ops(mode)
    try:
        yield
    finally:
        set_fused_ops(previous)


def tracing_or_compiling() -> bool:
    """Whether ``torch.compile``, ``torch.jit`` tracing or scripting is
    running: they trace the operations a module runs, so nothing may stand
    in for them (neither a fused op nor a CUDA graph)."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.jit.is_scripting())


def may_fuse(x: Tensor, tensors: Sequence[Optional[Tensor]],
             stands_in_for: Sequence[nn.Module]) -> bool:
    """Whether a fused op may compute, for input ``x``, what the modules
    ``stands_in_for`` compute, reading ``tensors`` (parameters and
    buffers; None where absent). See the module's docstring for the
    conditions."""
    if _mode == 'off':
        return False
    if not triton_installed():
        if _mode == 'always':
            raise RuntimeError(
                f"mmdyn fused ops: mode 'always' ({ENV_VAR} or "
                "set_fused_ops) but Triton is not installed: pip install "
                "triton, or use mode 'auto'")
        return False
    if not (x.is_cuda or (_mode == 'always' and x.device.type == 'cpu'
                          and interpreting())):
        return False
    dtype = compute_dtype(x)
    if dtype is None or x.numel() == 0:
        return False
    if any(t is not None and t.dtype != dtype for t in tensors):
        return False
    return not (tracing_or_compiling() or has_hooks(stands_in_for))


def folding_pays(x: Tensor) -> bool:
    """Whether a batch the size of ``x``'s is small enough to fold
    attentions into per-sample weights that the layer itself would not
    make (:data:`MAX_FOLD_BATCH`)."""
    return x.shape[0] <= MAX_FOLD_BATCH


def needs_grad(module: nn.Module, x: Tensor) -> bool:
    """Whether ``module``'s output for ``x`` needs a gradient (the
    inference ops, forward only, apply where it does not)."""
    return torch.is_grad_enabled() and (x.requires_grad or any(
        p.requires_grad for p in module.parameters()))


def compute_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype a fused op computes in for input ``x`` (that of the
    parameters it reads), or None where no fused op runs: ``x``'s own,
    float32 or float64; under autocast float32, for an ``x`` of float32,
    float16 or bfloat16 (a half-precision sum over a feature map's pixels
    can overflow; the pooled sums are taken in float32)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.float32 if x.dtype in (
            torch.float32, torch.float16, torch.bfloat16) else None
    return x.dtype if x.dtype in (torch.float32, torch.float64) else None


def conv_dtype(x: Tensor) -> Optional[torch.dtype]:
    """The dtype autocast casts a conv's operands to for input ``x``, or
    None where autocast is off on ``x``'s device."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def as_conv_operands(x: Tensor, *tensors: Optional[Tensor]) -> tuple:
    """``x`` and ``tensors`` (None stays None) cast to autocast's dtype on
    ``x``'s device, as autocast casts a conv's operands; as they are where
    autocast is off."""
    dtype = conv_dtype(x)
    if dtype is None:
        return (x, *tensors)
    return tuple(None if t is None else t.to(dtype) for t in (x, *tensors))


def outside_autocast(x: Tensor):
    """A context without autocast on ``x``'s device, for the op's own
    float32 computation (a no-op context where autocast is off)."""
    if not torch.is_autocast_enabled(x.device.type):
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, enabled=False)
