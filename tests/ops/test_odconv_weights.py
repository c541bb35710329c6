"""ODConv's fused op (mmdyn/ops/odconv_weights.py): where it applies and
runs, where it does not, and its gradients at shapes that span several
tiles. Its agreement with the reference on every geometry is in
layers/test_reference_comparison.py (the '-fused' cases)."""
import pytest
import torch

from conftest import DEVICES
from layer_cases import (ApplySpy, compare, make_layer, randomize,
                         triton_runs_here)
from mmdyn.layers import ODConv2d
from mmdyn.ops import dispatch, fused_ops
from mmdyn.ops import odconv_weights as fused
from reference import odconv_reference


def _layer(kernel_num=1, groups=1, channels=8, device='cpu'):
    return ODConv2d(channels, channels, 3, padding=1, groups=groups,
                    kernel_num=kernel_num).double().eval().to(device)


def _input(channels=8, batch=2, device='cpu'):
    return torch.randn(batch, channels, 6, 5, dtype=torch.float64,
                       device=device)


def _needs_triton(device):
    if not triton_runs_here(device):
        pytest.skip('needs Triton: on CUDA, or triton >= 3.9 for its CPU '
                    'interpreter')


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('kernel_num,groups', [(1, 1), (4, 1), (1, 8)])
def test_runs_for_dense_and_depthwise_layers_with_running_stats(
        kernel_num, groups, device, monkeypatch):
    _needs_triton(device)
    spy = ApplySpy(monkeypatch, fused.FusedODConvWeights)
    layer = _layer(kernel_num, groups, device=device)
    x = _input(device=device)
    with fused_ops('always'):
        assert fused.applies(layer, x)
        layer(x)
    assert spy.calls == 1


@pytest.mark.parametrize('case', [
    'mode off', 'grouped', 'bn training', 'float16', 'autocast',
    'hooked attention', 'empty batch'
])
def test_does_not_apply(case, monkeypatch):
    _needs_triton('cpu')
    spy = ApplySpy(monkeypatch, fused.FusedODConvWeights)
    layer = _layer(groups=4 if case == 'grouped' else 1)
    x = _input()
    mode = 'off' if case == 'mode off' else 'always'
    if case == 'bn training':
        layer.attention.bn.train()
    elif case == 'float16':
        layer, x = layer.half(), x.half()
    elif case == 'hooked attention':
        layer.attention.register_forward_hook(lambda *args: None)
    elif case == 'empty batch':
        x = x[:0]
    with fused_ops(mode), torch.no_grad():
        if case == 'autocast':
            with torch.autocast('cpu', dtype=torch.bfloat16):
                assert not fused.applies(layer, x)
        else:
            assert not fused.applies(layer, x)
            if case != 'float16':  # no half-precision conv on a CPU
                layer(x)
    assert spy.calls == 0


def test_above_the_batch_limit_only_where_weights_must_be_per_sample(
        monkeypatch):
    """Above MAX_FOLD_BATCH a 1x1 layer with one weight (a static conv
    between two scalings) runs its own operations; a layer with a spatial
    or kernel-wise attention still gets its weights from the op."""
    _needs_triton('cpu')
    spy = ApplySpy(monkeypatch, fused.FusedODConvWeights)
    monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 2)
    x = _input(batch=3)
    pointwise = ODConv2d(8, 8, 1).double().eval()
    with fused_ops('always'), torch.no_grad():
        assert fused.applies(_layer(kernel_num=1), x)  # spatial
        assert fused.applies(ODConv2d(8, 8, 1, kernel_num=4).double().eval(),
                             x)  # kernel-wise
        assert fused.applies(pointwise, x[:2])
        assert not fused.applies(pointwise, x)
        torch.testing.assert_close(pointwise(x), odconv_reference(pointwise,
                                                                  x))
    assert spy.calls == 0


def test_off_on_a_cpu_in_the_default_mode():
    assert not fused.applies(_layer(), _input())


@pytest.mark.slow
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('kernel_num', [1, 4])
def test_many_tiles_match_the_reference(kernel_num, device, monkeypatch):
    """Channels, taps and heads' rows over several tiles of every GPU
    kernel (the tiles made small), a batch of 3, bias and temperature."""
    _needs_triton(device)
    monkeypatch.setattr(fused, '_FOLD_TILE', 64)
    monkeypatch.setattr(fused, '_HEAD_ROWS', 16)
    spy = ApplySpy(monkeypatch, fused.FusedODConvWeights)
    torch.manual_seed(0)
    layer = ODConv2d(40, 36, 3, padding=1, bias=True, kernel_num=kernel_num,
                     temperature=2.5, min_channels=20)
    randomize(layer)
    layer = layer.double().eval().to(device)
    x = _input(40, 3, device)
    with fused_ops('always'):
        compare(layer, odconv_reference, x, atol=1e-8)
    assert spy.calls == 1


@pytest.mark.parametrize('geometry', ['3x3', '1x1', 'depthwise'])
def test_attentions_by_the_kernels_equal_the_branch(geometry):
    """odconv_attentions, the branch's kernels without a weight fold, gives
    the channel, spatial and filter attentions of the layer's own branch
    (float64); a test that sees each one: the output comparisons see them
    only through the conv."""
    layer, _ = make_layer('odconv-1x-fused', geometry)
    layer.eval()
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad(), fused_ops('always'):
        assert fused.branch_fuses(layer, x)
        channel, spatial, filter = fused.odconv_attentions(layer, x)
        expected = layer.attention(x, layer.temperature)
    for got, want in ((channel, expected.channel),
                      (spatial, expected.spatial),
                      (filter, expected.filter)):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
