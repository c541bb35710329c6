"""DCD's fused op (mmdyn/ops/dcd_weights.py): every geometry it takes
against the reference formulation without gradients, forward and backward
at shapes that span several tiles, and where it does not apply. Forward and
backward on every geometry: layers/test_reference_comparison.py
('dcd-fused')."""
import pytest
import torch

from conftest import DEVICES
from layer_cases import (GEOMETRIES, ApplySpy, compare, make_layer, randomize,
                         triton_runs_here)
from mmdyn.layers import DCDConv2d
from mmdyn.ops import dcd_weights as fused
from mmdyn.ops import dispatch, fused_ops
from reference import dcd_reference

FOLDING = [name for name, geometry in GEOMETRIES.items() if geometry[6] == 1]


def _needs_triton(device='cpu'):
    if not triton_runs_here(device):
        pytest.skip('needs Triton: on CUDA, or triton >= 3.9 for its CPU '
                    'interpreter')


def _dcd(geometry='3x3', bias=False, temperature=1.0, dtype=torch.float64):
    layer, _ = make_layer('dcd-fused', geometry, bias=bias,
                          temperature=temperature, dtype=dtype)
    return layer.eval()


@pytest.mark.parametrize('geometry', FOLDING)
@pytest.mark.parametrize('batch', [1, 3])
def test_matches_the_reference_float64(geometry, batch, monkeypatch):
    spy = ApplySpy(monkeypatch, fused.FusedDCDWeights)
    layer = _dcd(geometry, bias=batch == 3, temperature=2.5)
    x = torch.randn(batch, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad(), fused_ops('always'):
        expected = dcd_reference(layer, x)
        got = layer(x)
    assert spy.calls == 1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_matches_the_reference_float32_at_several_tiles(monkeypatch):
    _needs_triton()
    spy = ApplySpy(monkeypatch, fused.FusedDCDWeights)
    torch.manual_seed(0)
    layer = DCDConv2d(72, 40, 3, padding=1, bias=True).eval()
    randomize(layer)
    x = torch.randn(2, 72, 10, 9)
    with torch.no_grad(), fused_ops('always'):
        expected = dcd_reference(layer, x)
        got = layer(x)
    assert spy.calls == 1
    torch.testing.assert_close(got, expected, rtol=1e-4,
                               atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('case', ['3x3', '1x1 strided', 'no affine'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_gradients_match_the_reference_at_several_tiles(
        case, dtype, device, monkeypatch):
    """Shapes where every backward GPU kernel has several programs, so that
    each partial sum has several parts."""
    _needs_triton(device)
    spy = ApplySpy(monkeypatch, fused.FusedDCDWeights)
    torch.manual_seed(1)
    if case == '3x3':
        layer = DCDConv2d(72, 40, 3, padding=1, bias=True)
    elif case == '1x1 strided':
        layer = DCDConv2d(72, 136, 1, stride=2, bias=True)
    else:
        layer = DCDConv2d(40, 24, 3, padding=1,
                          norm_cfg=dict(type='BN', affine=False))
    layer = layer.to(device, dtype).eval()
    randomize(layer)
    x = torch.randn(3, layer.in_channels, 10, 9, dtype=dtype, device=device)
    with fused_ops('always'):
        compare(layer, dcd_reference, x,
                atol=1e-9 if dtype == torch.float64 else 2e-4)
    assert spy.calls == 1


@pytest.mark.parametrize('case', ['mode off', 'grouped', 'bn training',
                                  'pool 2', 'hooked branch',
                                  'batch above the limit'])
def test_does_not_apply(case, monkeypatch):
    _needs_triton()
    spy = ApplySpy(monkeypatch, fused.FusedDCDWeights)
    layer = _dcd('3x3-grouped' if case == 'grouped' else '3x3')
    x = torch.randn(2, layer.in_channels, 9, 7, dtype=torch.float64)
    with fused_ops('always'):
        # the same layer and input without what the case changes: it
        # applies
        assert fused.applies(layer, x) == (case != 'grouped')
    if case == 'bn training':
        layer.train()
    elif case == 'pool 2':
        layer.pool_size = 2
    elif case == 'hooked branch':
        layer.fc_phi.register_forward_hook(lambda *args: None)
    elif case == 'batch above the limit':
        monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', x.shape[0] - 1)
    with fused_ops('off' if case == 'mode off' else 'always'):
        assert not fused.applies(layer, x)
        if case != 'pool 2':  # the flag alone does not make a 2x2 branch
            layer(x)
    assert spy.calls == 0


@pytest.mark.parametrize('geometry', ['3x3', '1x1-stride2'])
def test_dynamics_by_the_kernels_equal_the_branch(geometry):
    """dcd_dynamics, the branch's kernels without the fold, gives Lambda(x)
    and Phi(x) of the layer's own branch (float64)."""
    layer = _dcd(geometry, temperature=2.5)
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad(), fused_ops('always'):
        assert fused.branch_fuses(layer, x)
        scale, phi = fused.dcd_dynamics(layer, x)
        expected = layer.dynamics(x)
    torch.testing.assert_close(scale, expected.scale, rtol=0, atol=1e-12)
    torch.testing.assert_close(phi, expected.phi, rtol=0, atol=1e-12)


def test_the_branch_by_the_kernels_needs_a_1x1_pool():
    layer, _ = make_layer('dcd-fused', '3x3')
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    layer.pool_size = 2
    with fused_ops('always'):
        assert not fused.branch_fuses(layer, x)
