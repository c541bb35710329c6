"""The per-sample convolution at two images as one dense conv over a
block-diagonal weight (mmdyn/ops/block_diagonal_conv.py): its output and
gradients against one ``F.conv2d`` per sample, where it applies and where
not, and the layers that take it."""
import pytest
import torch

from layer_cases import (ApplySpy, compare_through, forward_backward,
                         relative_error, triton_runs_here)
from mmdyn.layers import ODConv2d
from mmdyn.ops import block_diagonal_conv as block_diagonal
from mmdyn.ops import fused_ops
from mmdyn.ops.per_sample_conv import Geometry
from reference import per_sample_conv_reference

# (in, out, kernel, stride, padding, dilation): the form is written for
# any geometry, though it applies to 1x1 layers only
GEOMETRIES = {
    '1x1': (5, 7, 1, 1, 0, 1),
    '1x1-stride2': (5, 7, 1, 2, 0, 1),
    '3x3-stride2': (6, 9, 3, 2, 1, 1),
    '3x3-dilated': (4, 6, 3, 1, 2, 2),
    '5x3-asymmetric': (3, 5, (5, 3), (1, 2), (2, 0), 1),
}


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _case(name, bias=True, seed=0):
    c, co, k, s, p, d = GEOMETRIES[name]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, 9, 8, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, co, c, *_pair(k), generator=gen,
                         dtype=torch.float64)
    b = torch.randn(2, co, generator=gen, dtype=torch.float64) \
        if bias else None
    return (x, weight, b), Geometry(_pair(s), _pair(p), _pair(d))


def _block_diagonal(x, weight, bias, g):
    return block_diagonal.block_diagonal_conv(x, weight, bias, *g)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
def test_equals_one_conv_per_sample(geometry, bias):
    """Output and the gradients of input, weights and bias, float64."""
    tensors, g = _case(geometry, bias)
    got, grad_out = forward_backward(_block_diagonal, tensors, g)
    expected, _ = forward_backward(per_sample_conv_reference, tensors, g,
                                   grad_out)
    for a, e in zip(got, expected, strict=True):
        assert relative_error(a, e) < 1e-8


@pytest.mark.parametrize('wrong', ['neighbour weights', 'no weights'])
def test_a_sample_with_the_wrong_weights_fails(wrong):
    """Negative checks: the reference with the samples' weights swapped, or
    with a sample's weights dropped (zeros), is far from the form."""
    (x, weight, bias), g = _case('1x1')
    got = _block_diagonal(x, weight, bias, g)
    if wrong == 'neighbour weights':
        weight = weight.flip(0)
    else:
        weight = torch.cat([weight[:1], torch.zeros_like(weight[1:])])
    assert relative_error(got, per_sample_conv_reference(x, weight, bias,
                                                         g)) > 1e-2


def test_a_non_finite_weight_stays_in_its_sample():
    """Sample 0's infinite weight does not reach sample 1 through the zero
    blocks (0 * inf would be NaN): as with one conv per sample."""
    (x, weight, bias), g = _case('1x1')
    weight[0, 0, 0] = float('inf')
    got = _block_diagonal(x, weight, bias, g)
    assert not torch.isfinite(got[0]).all()
    assert torch.isfinite(got[1]).all()
    # equal up to the order of the sums, which the CPU's conv kernel picks
    torch.testing.assert_close(got[1], per_sample_conv_reference(
        x[1:], weight[1:], bias[1:], g)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize('case', [
    'applies', 'mode off', 'one image', 'three images', '3x3', 'small map',
    'stride over large map', 'grouped', 'autocast', 'mixed dtypes'
])
def test_applies_only_where_it_should(case):
    """Two images, a dense 1x1 layer whose output has MIN_PIXELS pixels or
    more, a fast path allowed, autocast off (decided from shapes alone);
    each boundary from both sides."""
    if not triton_runs_here('cpu'):
        pytest.skip('the dispatch allows fast paths on a CPU only in mode '
                    "'always', with Triton's interpreter")
    side = 63 if case == 'small map' else 64
    kernel = 3 if case == '3x3' else 1
    stride = 2 if case == 'stride over large map' else 1
    groups = 2 if case == 'grouped' else 1
    layer = ODConv2d(4, 4, kernel, stride=stride, padding=kernel // 2,
                     groups=groups)
    batch = {'one image': 1, 'three images': 3}.get(case, 2)
    dtype = torch.float32 if case == 'autocast' else torch.float64
    x = torch.randn(batch, 4, side, side + 1, dtype=dtype)
    weight = torch.randn(batch, 4, 4 // groups, kernel, kernel,
                         dtype=torch.float32 if case == 'mixed dtypes'
                         else dtype)
    autocast = torch.autocast('cpu', dtype=torch.bfloat16,
                              enabled=case == 'autocast')
    with fused_ops('off' if case == 'mode off' else 'always'), autocast:
        assert block_diagonal.applies(layer, x, weight, None) is \
            (case == 'applies')


@pytest.mark.parametrize('layer_name', ['odconv-1x-fused', 'odconv-4x-fused',
                                        'dcd-fused', 'condconv'])
def test_layers_take_it_and_equal_their_reference(layer_name, monkeypatch):
    """A 1x1 layer's per-sample conv at two images over a 64x64 map goes
    through the form and still equals the reference formulation, forward
    and backward (float64)."""
    if not triton_runs_here('cpu'):
        pytest.skip("mode 'always' needs Triton's interpreter")
    spy = ApplySpy(monkeypatch, block_diagonal, 'block_diagonal_conv')
    x = torch.randn(2, 8, 64, 64, dtype=torch.float64)
    compare_through(spy, layer_name, '1x1', x, atol=1e-8)


@pytest.mark.gpu
def test_gpu_layer_in_float32_equals_reference(monkeypatch):
    """On the GPU, in float32 (TF32 off), a 1x1 ODConv (4x) layer at two
    images of 64x64 takes the form and equals its reference formulation."""
    if not triton_runs_here('cuda'):
        pytest.skip('needs CUDA and Triton')
    spy = ApplySpy(monkeypatch, block_diagonal, 'block_diagonal_conv')
    x = torch.randn(2, 8, 64, 64, device='cuda')
    compare_through(spy, 'odconv-4x-fused', '1x1', x, atol=1e-4,
                    device='cuda', dtype=torch.float32)
