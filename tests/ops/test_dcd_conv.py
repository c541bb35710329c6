"""DCD's inference at a large batch as one conv kernel
(mmdyn/ops/dcd_conv.py): against the reference formulation (float64,
< 1e-8) over the geometries a backbone uses, the negative checks, where it
applies and where not, and (marked ``gpu``) float32, TF32 and, under
autocast, float16 and bfloat16 on a GPU."""
import pytest
import torch

from layer_cases import (PRECISION_TOLERANCE, ApplySpy, gpu_inference_error,
                         inference, make_layer, relative_error)
from mmdyn.layers import DCDConv2d
from mmdyn.ops import dcd_conv, dispatch, fused_ops
from reference import MUTATIONS, dcd_reference


@pytest.fixture
def spy(monkeypatch):
    return ApplySpy(monkeypatch, dcd_conv, 'dcd_conv')


@pytest.mark.parametrize('geometry', [
    '1x1', '1x1-stride2', '1x1-padded', '3x3-stride2', '3x3-dilated',
    '5x5-unpadded', '2x2-even', '1x3'
])
@pytest.mark.parametrize('layer_name', ['dcd', 'dcd-pool2'])
def test_layer_equals_its_reference(layer_name, geometry, large_batch, spy):
    """Every geometry puts the latent residual on its own centre tap (and
    off the map where padding is negative or uneven)."""
    if layer_name == 'dcd-pool2' and geometry != '3x3-stride2':
        pytest.skip('pooling changes the dynamic branch only')
    got, expected, _ = inference(layer_name, geometry)
    assert spy.calls == 1
    assert relative_error([got], [expected]) < 1e-8


@pytest.mark.parametrize('how', MUTATIONS)
@pytest.mark.parametrize('part', ['scale', 'phi', 'identity'])
def test_a_dropped_or_doubled_part_fails(part, how, large_batch, spy):
    """Negative checks: the comparison sees the op's output differ from a
    reference that drops or doubles Lambda or Phi, or drops the identity
    added to Phi."""
    if part == 'identity' and how == 'twice':
        pytest.skip('the reference drops the identity only')
    got, mutant, _ = inference('dcd', '3x3-stride2', mutate={part: how})
    assert spy.calls == 1
    assert relative_error([got], [mutant]) > 1e-3


@pytest.mark.parametrize('case', [
    'no grad', 'frozen', 'parameters need a gradient', 'small batch',
    'grouped', 'bn training', 'mode off', 'autocast'
])
def test_applies_only_in_eval_mode_where_nothing_needs_a_gradient(
        case, monkeypatch):
    layer, _ = make_layer('dcd', '3x3-grouped' if case == 'grouped' else
                          '3x3', dtype=torch.float32)
    layer.eval()
    if case != 'small batch':
        monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 1)
    if case == 'frozen':
        layer.requires_grad_(False)
    if case == 'bn training':
        layer.bn2.train()
    x = torch.randn(2, 8, 5, 5)
    grad = case in ('frozen', 'parameters need a gradient')
    autocast = torch.autocast('cpu', dtype=torch.float16,
                              enabled=case == 'autocast')
    with fused_ops('off' if case == 'mode off' else 'always'), \
            torch.set_grad_enabled(grad), autocast:
        assert dcd_conv.applies(layer, x) is (case in ('no grad', 'frozen',
                                                       'autocast'))


@pytest.mark.gpu
@pytest.mark.parametrize('precision', ['float32', 'tf32', 'float16',
                                       'bfloat16'])
@pytest.mark.parametrize('layout', ['nchw', 'channels-last'])
def test_gpu_runs_within_tolerance(precision, layout, large_batch, spy):
    """A ResNet-sized layer (the 3x3 of stage 2) at 16 images in float32
    (TF32 off), TF32 and under autocast (float16, bfloat16) takes the op,
    within ``PRECISION_TOLERANCE`` of the float32 reference."""
    torch.manual_seed(0)
    error = gpu_inference_error(DCDConv2d(128, 128, 3, padding=1),
                                dcd_reference, precision, layout)
    assert spy.calls == 1
    assert error < PRECISION_TOLERANCE[precision]
