"""DCD's fused Triton kernels (mmdyn/layers/dcd_fused.py): every geometry
they take against the reference formulation without gradients, forward and
backward at shapes that span several tiles, and where they do not apply.
Forward and backward on every geometry: test_layers.py ('dcd-triton')."""
import pytest
import torch

from layer_cases import (GEOMETRIES, compare, make_layer, randomize,
                         triton_runs_here)
from mmdyn.layers import DCDConv2d
from reference import dcd_reference

needs_triton = pytest.mark.skipif(
    not triton_runs_here(),
    reason='needs Triton: on CUDA (MMDYN_TEST_DEVICE=cuda), or triton >= '
    '3.9 for its CPU interpreter')
FOLDING = [name for name, geometry in GEOMETRIES.items() if geometry[6] == 1]


def _dcd(geometry='3x3', bias=False, temperature=1.0, dtype=torch.float64):
    layer, _ = make_layer('dcd', geometry, bias=bias,
                          temperature=temperature, dtype=dtype)
    layer.triton_kernels = True
    layer.fold_attentions = True
    return layer.eval()


@needs_triton
@pytest.mark.parametrize('geometry', FOLDING)
@pytest.mark.parametrize('batch', [1, 3])
def test_matches_the_reference_float64(geometry, batch):
    layer = _dcd(geometry, bias=batch == 3, temperature=2.5)
    x = torch.randn(batch, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        assert layer.uses_triton(x)
        expected = dcd_reference(layer, x)
        got = layer(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


@needs_triton
def test_matches_the_reference_float32_at_several_tiles():
    torch.manual_seed(0)
    layer = DCDConv2d(72, 40, 3, padding=1, bias=True).eval()
    layer.triton_kernels = True
    layer.fold_attentions = True
    randomize(layer)
    x = torch.randn(2, 72, 10, 9)
    with torch.no_grad():
        assert layer.uses_triton(x)
        expected = dcd_reference(layer, x)
        got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-4,
                               atol=1e-4 * expected.abs().max().item())


@needs_triton
@pytest.mark.parametrize('case', ['3x3', '1x1 strided', 'no affine'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_gradients_match_the_reference_at_several_tiles(case, dtype):
    """Shapes where every backward kernel has several programs, so that
    each partial sum has several parts."""
    torch.manual_seed(1)
    if case == '3x3':
        layer = DCDConv2d(72, 40, 3, padding=1, bias=True)
    elif case == '1x1 strided':
        layer = DCDConv2d(72, 136, 1, stride=2, bias=True)
    else:
        layer = DCDConv2d(40, 24, 3, padding=1,
                          norm_cfg=dict(type='BN', affine=False))
    layer = layer.to(dtype).eval()
    layer.triton_kernels = True
    layer.fold_attentions = True
    randomize(layer)
    x = torch.randn(3, layer.in_channels, 10, 9, dtype=dtype)
    assert layer.uses_triton(x.requires_grad_())
    compare(layer, dcd_reference, x,
            atol=1e-9 if dtype == torch.float64 else 2e-4)


@needs_triton
@pytest.mark.parametrize('case', ['grouped', 'bn training', 'pool 2',
                                  'unfolded', 'hooked branch'])
def test_falls_back_where_it_does_not_apply(case):
    layer = _dcd('3x3-grouped' if case == 'grouped' else '3x3')
    x = torch.randn(2, layer.in_channels, 9, 7, dtype=torch.float64)
    # the same layer and input without what the case changes: it applies
    assert layer.uses_triton(x) == (case != 'grouped')
    if case == 'bn training':
        layer.train()
    elif case == 'pool 2':
        layer.pool_size = 2
    elif case == 'unfolded':
        layer.fold_attentions = False
    elif case == 'hooked branch':
        layer.fc_phi.register_forward_hook(lambda *args: None)
    assert not layer.uses_triton(x)


def test_rejects_values_other_than_none_true_false():
    layer = _dcd()
    layer.triton_kernels = 1
    with pytest.raises(ValueError, match='triton_kernels must be None'):
        with torch.no_grad():
            layer(torch.randn(1, layer.in_channels, 5, 5,
                              dtype=torch.float64))
