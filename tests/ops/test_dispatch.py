"""The one predicate that decides whether a fused op may run
(mmdyn.ops.dispatch.may_fuse), and the process's fused-op mode."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import mmdyn.ops.dispatch as dispatch
from layer_cases import triton_runs_here
from mmdyn.ops import fused_ops, fused_ops_mode, may_fuse, set_fused_ops
from mmdyn.ops.pixel_sums import pixel_sums

needs_triton = pytest.mark.skipif(
    not triton_runs_here(),
    reason='needs Triton: triton >= 3.9 for its CPU interpreter')


def _case(dtype=torch.float64):
    module = nn.Linear(4, 4).to(dtype)
    return torch.randn(2, 4, 3, 3, dtype=dtype), [module.weight], [module]


@needs_triton
def test_allowed_in_mode_always_on_the_interpreter():
    x, tensors, modules = _case()
    with fused_ops('always'):
        assert may_fuse(x, tensors, modules)
        assert may_fuse(x.float(), [t.float() for t in tensors], modules)
    with fused_ops('auto'):  # a CPU tensor: only in mode 'always'
        assert not may_fuse(x, tensors, modules)
    with fused_ops('off'):
        assert not may_fuse(x, tensors, modules)


@needs_triton
@pytest.mark.parametrize('case', [
    'float16', 'mixed dtypes', 'empty', 'autocast', 'module hook',
    'submodule hook', 'backward hook', 'global hook', 'tracing'
])
def test_refused(case):
    x, tensors, modules = _case()
    handle = None
    if case == 'float16':
        x, tensors = x.half(), [t.half() for t in tensors]
    elif case == 'mixed dtypes':
        tensors = [t.float() for t in tensors]
    elif case == 'empty':
        x = x[:0]
    elif case == 'module hook':
        handle = modules[0].register_forward_hook(lambda *a: None)
    elif case == 'submodule hook':
        modules = [nn.Sequential(modules[0])]
        handle = modules[0][0].register_forward_pre_hook(lambda *a: None)
    elif case == 'backward hook':
        handle = modules[0].register_full_backward_hook(lambda *a: None)
    elif case == 'global hook':
        handle = nn.modules.module.register_module_forward_hook(
            lambda *a: None)
    try:
        with fused_ops('always'):
            if case == 'autocast':  # float64 is not autocast's
                with torch.autocast('cpu', dtype=torch.bfloat16):
                    assert not may_fuse(x, tensors, modules)
            elif case == 'tracing':
                seen = []
                torch.jit.trace(
                    lambda t: seen.append(may_fuse(t, tensors, modules))
                    or t * 1, x, check_trace=False)
                assert seen == [False]
            else:
                assert not may_fuse(x, tensors, modules)
    finally:
        if handle is not None:
            handle.remove()


@needs_triton
def test_under_autocast_the_ops_compute_in_float32():
    """Under autocast a fused op computes in float32, its parameters'
    dtype, from float32 pixel sums of a float32, float16 or bfloat16
    input."""
    x, tensors, modules = _case(torch.float32)
    with fused_ops('always'), torch.autocast('cpu', dtype=torch.bfloat16):
        for inp in (x, x.bfloat16(), x.half()):
            assert dispatch.compute_dtype(inp) == torch.float32
            assert may_fuse(inp, tensors, modules)
            assert pixel_sums(inp).dtype == torch.float32
        assert not may_fuse(x, [t.bfloat16() for t in tensors], modules)
        assert not may_fuse(x.double(), tensors, modules)
    assert dispatch.compute_dtype(x.bfloat16()) is None


def test_mode_always_without_triton_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(dispatch, 'triton_installed', lambda: False)
    x, tensors, modules = _case()
    with fused_ops('always'), pytest.raises(RuntimeError,
                                            match='pip install triton'):
        may_fuse(x, tensors, modules)
    with fused_ops('auto'):
        assert not may_fuse(x, tensors, modules)


def test_modes_and_their_errors():
    assert fused_ops_mode() == 'auto'
    with fused_ops('off'):
        assert fused_ops_mode() == 'off'
    assert fused_ops_mode() == 'auto'
    with pytest.raises(ValueError, match=r"one of \('auto', 'off', "
                       r"'always'\).*got 'yes'"):
        set_fused_ops('yes')
    assert fused_ops_mode() == 'auto'


@pytest.mark.slow
def test_the_environment_sets_the_mode_a_process_starts_in():
    code = 'import mmdyn.ops as o; print(o.fused_ops_mode())'
    for value, expected in (('off', 'off'), ('always', 'always')):
        out = subprocess.run([sys.executable, '-c', code], text=True,
                             capture_output=True,
                             env={**os.environ,
                                  dispatch.ENV_VAR: value})
        assert out.stdout.strip() == expected, out.stderr
    out = subprocess.run([sys.executable, '-c', code], text=True,
                         capture_output=True,
                         env={**os.environ,
                              dispatch.ENV_VAR: 'fast'})
    assert out.returncode != 0 and 'MMDYN_FUSED_OPS must be one of' in \
        out.stderr
