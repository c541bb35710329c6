"""ODConv's fused Triton kernels (mmdyn/layers/odconv_fused.py): where they
apply, what they refuse, and their gradients at shapes that span several
tiles. Their agreement with the reference on every geometry is in
test_layers.py (the '-triton' layers)."""
import pytest
import torch

import mmdyn.layers.base as base_module
from layer_cases import compare, randomize, triton_runs_here
from mmdyn.layers import ODConv2d
from reference import odconv_reference

needs_triton = pytest.mark.skipif(
    not triton_runs_here(),
    reason='needs Triton: on CUDA (MMDYN_TEST_DEVICE=cuda), or triton >= '
    '3.9 for its CPU interpreter')


def _layer(kernel_num=1, groups=1, channels=8):
    layer = ODConv2d(channels, channels, 3, padding=1, groups=groups,
                     kernel_num=kernel_num).double().eval()
    layer.triton_kernels = True
    layer.fold_attentions = True
    return layer


def _input(channels=8, batch=2):
    return torch.randn(batch, channels, 6, 5, dtype=torch.float64)


@needs_triton
def test_applies_to_dense_and_depthwise_layers_with_running_stats():
    assert _layer().uses_triton(_input())
    assert _layer(kernel_num=4).uses_triton(_input())
    assert _layer(groups=8).uses_triton(_input())


@needs_triton
@pytest.mark.parametrize('case', [
    'triton_kernels=False', 'grouped', 'bn training', 'float16',
    'autocast', 'unfolded', 'hooked attention', 'empty batch'
])
def test_falls_back_where_it_does_not_apply(case):
    layer = _layer(groups=4 if case == 'grouped' else 1)
    x = _input()
    if case == 'triton_kernels=False':
        layer.triton_kernels = False
    elif case == 'bn training':
        layer.attention.bn.train()
    elif case == 'float16':
        layer, x = layer.half(), x.half()
    elif case == 'unfolded':
        layer.fold_attentions = False
    elif case == 'hooked attention':
        layer.attention.register_forward_hook(lambda *args: None)
    elif case == 'empty batch':
        x = x[:0]
    if case == 'autocast':
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            assert not layer.uses_triton(x)
    else:
        assert not layer.uses_triton(x)


def test_off_without_a_gpu_unless_asked_for():
    layer = _layer()
    layer.triton_kernels = None
    assert not layer.uses_triton(_input().cpu())


def test_asking_for_triton_without_it_installed_says_so(monkeypatch):
    monkeypatch.setattr(base_module, 'triton_installed', lambda: False)
    layer = _layer()
    with pytest.raises(RuntimeError, match='pip install triton'):
        layer(_input())
    layer.triton_kernels = None
    assert layer(_input()).shape == (2, 8, 6, 5)


def test_rejects_values_other_than_none_true_false():
    layer = _layer()
    layer.triton_kernels = 'yes'
    with pytest.raises(ValueError, match='triton_kernels must be None, '
                       "True or False, got 'yes'"):
        layer(_input())


def test_is_part_of_the_cuda_graph_key():
    layer = _layer()
    key = layer.cuda_graph_key()
    layer.triton_kernels = False
    assert layer.cuda_graph_key() != key


@needs_triton
@pytest.mark.parametrize('kernel_num', [1, 4])
def test_many_tiles_match_the_reference(kernel_num, monkeypatch):
    """Channels, taps and heads' rows over several tiles of every kernel
    (the tiles made small), a batch of 3, bias and temperature."""
    import mmdyn.layers.odconv_fused as fused
    monkeypatch.setattr(fused, '_FOLD_TILE', 64)
    monkeypatch.setattr(fused, '_HEAD_ROWS', 16)
    torch.manual_seed(0)
    layer = ODConv2d(40, 36, 3, padding=1, bias=True, kernel_num=kernel_num,
                     temperature=2.5, min_channels=20)
    layer.triton_kernels, layer.fold_attentions = True, True
    randomize(layer)
    layer = layer.double().eval()
    x = _input(40, 3)
    assert layer.uses_triton(x)
    compare(layer, odconv_reference, x, atol=1e-8)
