"""ODConv (1x) inference with its attentions applied inside the conv kernel
(mmdyn/ops/scaled_weight_conv.py): at a large batch without gradients,
against the reference formulation (float64, < 1e-8), the negative checks,
where it applies and where not, and (marked ``gpu``) float32, float16 and
bfloat16 on a GPU."""
import pytest
import torch

from layer_cases import (PRECISION_TOLERANCE, ApplySpy, gpu_inference_error,
                         inference, make_layer, relative_error)
from mmdyn.layers import ODConv2d
from mmdyn.ops import dispatch, fused_ops
from mmdyn.ops import scaled_weight_conv as scaled
from reference import MUTATIONS, odconv_reference


@pytest.fixture
def spy(monkeypatch):
    return ApplySpy(monkeypatch, scaled, 'scaled_weight_conv')


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('geometry', ['1x1', '1x1-stride2', '1x1-padded',
                                      '3x3-stride2', '3x3-dilated', '1x3',
                                      '5x5-unpadded', '2x2-even'])
def test_layer_equals_its_reference(geometry, bias, large_batch, spy):
    got, expected, _ = inference('odconv-1x-fused', geometry, bias=bias)
    assert spy.calls == 1
    assert relative_error([got], [expected]) < 1e-8


@pytest.mark.parametrize('how', MUTATIONS)
@pytest.mark.parametrize('attention',
                         ['channel_fc', 'filter_fc', 'spatial_fc'])
def test_a_dropped_or_doubled_attention_fails(attention, how, large_batch,
                                              spy):
    """Negative checks: the comparison sees the op's output differ from a
    reference that drops or doubles any one attention."""
    got, mutant, _ = inference('odconv-1x-fused', '3x3-stride2',
                               mutate={attention: how})
    assert spy.calls == 1
    assert relative_error([got], [mutant]) > 1e-3


def test_keeps_a_channels_last_input_in_its_layout(large_batch, spy):
    layer, reference = make_layer('odconv-1x-fused', '3x3')
    layer.eval()
    x = torch.randn(3, 8, 9, 7, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    with fused_ops('always'), torch.no_grad():
        got = layer(x)
        expected = reference(layer, x)
    assert spy.calls == 1
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert relative_error([got], [expected]) < 1e-8


@pytest.mark.parametrize('case', [
    'no grad', 'frozen', 'parameters need a gradient', 'input needs a '
    'gradient', 'small batch', 'grouped', 'several weights', 'mode off',
    'float16', 'autocast'
])
def test_applies_only_where_nothing_needs_a_gradient(case, monkeypatch):
    layer, _ = make_layer(
        'odconv-4x-fused' if case == 'several weights' else
        'odconv-1x-fused', '3x3-grouped' if case == 'grouped' else '3x3',
        dtype=torch.float32)
    if case != 'small batch':
        monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 1)
    if case == 'frozen':
        layer.requires_grad_(False)
    x = torch.randn(2, 8, 5, 5,
                    requires_grad=case == 'input needs a gradient')
    if case == 'float16':  # a model cast to half precision, not autocast
        layer, x = layer.half(), x.half()
    grad = case in ('frozen', 'parameters need a gradient',
                    'input needs a gradient')
    expected = case in ('no grad', 'frozen', 'autocast')
    autocast = torch.autocast('cpu', dtype=torch.float16,
                              enabled=case == 'autocast')
    with fused_ops('off' if case == 'mode off' else 'always'), \
            torch.set_grad_enabled(grad), autocast:
        assert scaled.applies(layer, x) is expected


def test_training_keeps_the_per_sample_weights(large_batch, spy):
    """With gradients wanted the layer takes its other paths, and its
    gradients reach the attention branch."""
    layer = ODConv2d(8, 8, 3, padding=1).double().eval()
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    with fused_ops('always'):
        layer(x).sum().backward()
    assert spy.calls == 0
    assert layer.attention.fc.weight.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.parametrize('precision',
                         ['float32', 'tf32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('layout', ['nchw', 'channels-last'])
def test_gpu_runs_within_tolerance(precision, layout, large_batch, spy):
    """A ResNet-sized layer (the 3x3 of stage 2) at 16 images in float32,
    TF32, or under autocast in float16 / bfloat16 takes the op, within
    ``PRECISION_TOLERANCE`` of the float32 reference."""
    torch.manual_seed(0)
    error = gpu_inference_error(ODConv2d(128, 128, 3, padding=1),
                                odconv_reference, precision, layout)
    assert spy.calls == 1
    assert error < PRECISION_TOLERANCE[precision]
