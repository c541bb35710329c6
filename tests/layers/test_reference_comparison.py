"""The four dynamic convolutions against their plain reference formulations
(helpers/reference.py): forward and gradients of the input and of every
parameter, over the geometries a backbone uses, on the CPU and (marked
``gpu``) on a GPU; the fused ops of mmdyn.ops through the '-fused' cases."""
import pytest
import torch

import mmdyn  # noqa: F401  (registers the layers)
from conftest import DEVICES
from layer_cases import GEOMETRIES, LAYERS, compare, fused_mode, make_layer
from reference import MUTATIONS


def _runs_in_training(layer_name, batch):
    # ODConv's attention BatchNorm needs > 1 pooled vector per channel.
    return not (layer_name.startswith('odconv') and batch == 1)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('geometry', GEOMETRIES)
@pytest.mark.parametrize('layer_name', LAYERS)
@pytest.mark.parametrize('batch,training', [(1, False), (3, True),
                                            (3, False)])
def test_layer_matches_reference_float64(layer_name, geometry, batch,
                                         training, device):
    layer, reference = make_layer(layer_name, geometry, bias=batch == 3,
                                  temperature=1.0 if training else 2.5,
                                  device=device)
    layer.train(training)
    x = torch.randn(batch, layer.in_channels, 9, 7, dtype=torch.float64,
                    device=device)
    with fused_mode(layer_name):
        compare(layer, reference, x, atol=1e-8)


@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('geometry',
                         ['1x1', '3x3-stride2', 'depthwise-stride2'])
@pytest.mark.parametrize('layer_name', LAYERS)
def test_layer_matches_reference_float32(layer_name, geometry, device):
    layer, reference = make_layer(layer_name, geometry, dtype=torch.float32,
                                  device=device)
    layer.eval()
    x = torch.randn(2, layer.in_channels, 11, 10, device=device)
    with fused_mode(layer_name):
        compare(layer, reference, x, atol=1e-4)


MUTANTS = {
    'odconv-4x': ['channel_fc', 'filter_fc', 'spatial_fc', 'kernel_fc'],
    'dcd': ['scale', 'phi', 'identity'],
    'dyconv': ['kernel'],
    'condconv': ['kernel'],
}


@pytest.mark.parametrize('layer_name,attention',
                         [(name, att) for name, atts in MUTANTS.items()
                          for att in atts])
@pytest.mark.parametrize('how', MUTATIONS)
def test_reference_comparison_catches_a_dropped_or_doubled_attention(
        layer_name, attention, how):
    """The float64 comparison above would fail if the layer dropped an
    attention or applied it twice: such a layer differs from the reference
    by far more than the tolerance."""
    if attention == 'identity' and how == 'twice':
        pytest.skip('the identity is a constant; doubling it is not a bug '
                    'the reference can express')
    layer, reference = make_layer(layer_name, '3x3')
    layer.eval()
    x = torch.randn(2, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad(), fused_mode(layer_name):
        good = reference(layer, x)
        mutant = reference(layer, x, mutate={attention: how})
        assert (layer(x) - good).abs().max() < 1e-8
    assert (mutant - good).abs().max() > 1e-3


@pytest.mark.parametrize('layer_name', LAYERS)
def test_half_precision_close_to_float32(layer_name):
    layer, _ = make_layer(layer_name, '3x3-stride2', dtype=torch.float32)
    layer.eval()
    x = torch.randn(2, layer.in_channels, 9, 9)
    with torch.no_grad(), fused_mode(layer_name):
        expected = layer(x)
        got = layer.half()(x.half())
    assert got.dtype == torch.float16
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, rtol=2e-2,
                               atol=2e-2 * expected.abs().max().item())


@pytest.mark.parametrize('layer_name', LAYERS)
def test_memory_layout_does_not_change_the_result(layer_name):
    layer, _ = make_layer(layer_name, '3x3')
    layer.eval()
    x = torch.randn(2, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad(), fused_mode(layer_name):
        expected = layer(x)
        channels_last = layer(x.to(memory_format=torch.channels_last))
        transposed = layer(x.transpose(2, 3).contiguous().transpose(2, 3))
    torch.testing.assert_close(channels_last, expected)
    torch.testing.assert_close(transposed, expected)
