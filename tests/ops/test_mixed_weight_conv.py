"""Inference with weights formed inside the conv kernel
(mmdyn/ops/mixed_weight_conv.py): ODConv, DyConv and CondConv layers at a
large batch without gradients, against their reference formulations
(float64, < 1e-8), the negative checks, where it applies and where not,
and (marked ``gpu``) TF32, float16 and bfloat16 on a GPU."""
import pytest
import torch

from layer_cases import (PRECISION_TOLERANCE, ApplySpy, gpu_inference_error,
                         inference, make_layer, relative_error)
from mmdyn.layers import DyConv2d, ODConv2d
from mmdyn.ops import dispatch, fused_ops
from mmdyn.ops import mixed_weight_conv as mixed
from reference import MUTATIONS, dyconv_reference, odconv_reference

LAYERS = ['odconv-1x-fused', 'odconv-4x-fused', 'dyconv', 'condconv']


@pytest.fixture
def spy(monkeypatch):
    return ApplySpy(monkeypatch, mixed, 'mixed_weight_conv')


@pytest.mark.parametrize('geometry', ['1x1', '1x1-stride2', '3x3-stride2',
                                      '3x3-dilated', '1x3', '5x5-unpadded'])
@pytest.mark.parametrize('layer_name', LAYERS)
def test_layers_equal_their_reference(layer_name, geometry, large_batch,
                                      spy):
    if geometry != '3x3-stride2' and layer_name in ('dyconv', 'condconv'):
        pytest.skip('the bank-only layers run one geometry: the index paths '
                    'are those of the ODConv cases')
    got, expected, _ = inference(layer_name, geometry)
    assert spy.calls == 1
    assert relative_error([got], [expected]) < 1e-8


@pytest.mark.parametrize('how', MUTATIONS)
@pytest.mark.parametrize('layer_name,attention', [
    ('odconv-4x-fused', 'channel_fc'), ('odconv-4x-fused', 'filter_fc'),
    ('odconv-4x-fused', 'spatial_fc'), ('odconv-4x-fused', 'kernel_fc'),
    ('condconv', 'kernel')
])
def test_a_dropped_or_doubled_attention_fails(layer_name, attention, how,
                                              large_batch, spy):
    """Negative checks: the comparison sees the op's output differ from a
    reference that drops or doubles any one attention."""
    got, mutant, _ = inference(layer_name, '3x3-stride2', mutate={
        attention: how})
    assert spy.calls == 1
    assert relative_error([got], [mutant]) > 1e-3


def test_keeps_a_channels_last_input_in_its_layout(large_batch, spy):
    layer, reference = make_layer('odconv-4x-fused', '3x3')
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
    'gradient', 'small batch', 'grouped', 'mode off', 'float16'
])
def test_applies_only_where_nothing_needs_a_gradient(case, monkeypatch):
    layer, _ = make_layer('odconv-4x-fused', '3x3-grouped' if case ==
                          'grouped' else '3x3')
    if case != 'small batch':
        monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 1)
    if case == 'frozen':
        layer.requires_grad_(False)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64,
                    requires_grad=case == 'input needs a gradient')
    if case == 'float16':
        layer, x = layer.half(), x.half()
    grad = case not in ('no grad', 'small batch', 'grouped', 'mode off',
                        'float16')
    expected = case in ('no grad', 'frozen')
    with fused_ops('off' if case == 'mode off' else 'always'), \
            torch.set_grad_enabled(grad):
        assert mixed.applies(layer, x) is expected


def test_training_keeps_the_per_sample_weights(large_batch, spy):
    """With gradients wanted the layer takes its other paths, and its
    gradients reach the attention branch."""
    layer = ODConv2d(8, 8, 3, padding=1, kernel_num=4).double().eval()
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    with fused_ops('always'):
        layer(x).sum().backward()
    assert spy.calls == 0
    assert layer.attention.fc.weight.grad.abs().sum() > 0


@pytest.mark.gpu
@pytest.mark.parametrize('layer_name', LAYERS)
def test_gpu_float32_equals_reference(layer_name, large_batch, spy):
    """On the GPU in float32 (TF32 off) against the reference."""
    got, expected, _ = inference(layer_name, '3x3-stride2', device='cuda',
                                 dtype=torch.float32)
    assert spy.calls == 1
    assert relative_error([got], [expected]) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize('precision', ['tf32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('layout', ['nchw', 'channels-last'])
@pytest.mark.parametrize('cls,reference', [(ODConv2d, odconv_reference),
                                           (DyConv2d, dyconv_reference)])
def test_gpu_reduced_precision_within_tolerance(cls, reference, precision,
                                                layout, large_batch, spy):
    """A ResNet-sized layer (the 3x3 of stage 2, 4 weights) at 16 images in
    TF32, and under autocast in float16 / bfloat16, against the float32
    reference (tolerances: ``PRECISION_TOLERANCE``)."""
    torch.manual_seed(0)
    layer = cls(128, 128, 3, padding=1, kernel_num=4)
    error = gpu_inference_error(layer, reference, precision, layout)
    assert spy.calls == 1
    assert error < PRECISION_TOLERANCE[precision]
