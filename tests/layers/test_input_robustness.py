"""Inputs a detector meets besides the usual ones: one image, odd and tiny
sizes, strided and channels-last tensors, all-zero images, very large
images, and half-precision activations too large for the attention branch
to compute in float16. (Invalid arguments and checkpoints: test_layers,
test_backbones, test_checkpoints, test_safe_loading.)"""
import pytest
import torch
from mmdet.registry import MODELS

import mmdyn  # noqa: F401
from layer_cases import LAYERS, compare, make_layer

BACKBONES = {
    'ODResNet-4x': dict(type='ODResNet', depth=18, kernel_num=4),
    'DCDResNet': dict(type='DCDResNet', depth=18),
    'DyConvResNet': dict(type='DyConvResNet', depth=18),
    'CondConvResNet': dict(type='CondConvResNet', depth=18),
    'ODMobileNetV2': dict(type='ODMobileNetV2', widen_factor=0.5),
    'DCDMobileNetV2': dict(type='DCDMobileNetV2', widen_factor=0.5),
}


def build_backbone(name):
    torch.manual_seed(0)
    model = MODELS.build(BACKBONES[name])
    model.init_weights()
    return model.eval()


def static_output_sizes(height, width):
    """What MMDetection's static ResNet gives at strides 4 to 32."""
    static = MODELS.build(dict(type='mmdet.ResNet', depth=18))
    static.eval()
    with torch.no_grad():
        return [o.shape[-2:] for o in static(torch.zeros(1, 3, height,
                                                         width))]


@pytest.mark.parametrize('layer_name', LAYERS)
@pytest.mark.parametrize('geometry', ['1x1', '3x3', '3x3-stride2',
                                      'depthwise-stride2', '5x5-unpadded'])
@pytest.mark.parametrize('size', [(1, 1), (2, 3), (5, 5)])
def test_tiny_inputs_match_the_reference(layer_name, geometry, size):
    layer, reference = make_layer(layer_name, geometry)
    if geometry == '5x5-unpadded' and min(size) < 5:
        with pytest.raises(RuntimeError):
            layer.eval()(torch.randn(1, layer.in_channels, *size,
                                     dtype=torch.float64))
        return
    layer.eval()
    x = torch.randn(1, layer.in_channels, *size, dtype=torch.float64)
    compare(layer, reference, x, atol=1e-8)


@pytest.mark.parametrize('name', BACKBONES)
@pytest.mark.parametrize('size', [(33, 47), (8, 8), (1, 1)])
def test_odd_and_tiny_images_give_the_static_output_sizes(name, size):
    model = build_backbone(name)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert all(torch.isfinite(o).all() for o in outs)
    if 'ResNet' in name:
        assert [o.shape[-2:] for o in outs] == static_output_sizes(*size)


@pytest.mark.parametrize('name', BACKBONES)
def test_all_zero_images_train_and_infer(name):
    model = build_backbone(name)
    with torch.no_grad():
        outs = model(torch.zeros(2, 3, 32, 32))
    assert all(torch.isfinite(o).all() for o in outs)
    model.train()
    outs = model(torch.zeros(2, 3, 32, 32))
    sum(o.sum() for o in outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters()
               if p.grad is not None)


@pytest.mark.parametrize('name', ['ODResNet-4x', 'DCDMobileNetV2'])
def test_strided_and_channels_last_images(name):
    model = build_backbone(name)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = model(x)
        wide = torch.randn(2, 3, 64, 160)
        wide[..., ::2] = x
        for variant in (wide[..., ::2],
                        x.to(memory_format=torch.channels_last)):
            for got, want in zip(model(variant), expected):
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_very_large_image():
    """A 2000 x 3000 image (MMDetection resizes COCO to at most 1333 x
    800) through a dynamic backbone, in float16 too: the pooled means are
    accumulated in float32."""
    model = build_backbone('ODResNet-4x')
    x = torch.rand(1, 3, 2000, 3000)
    with torch.no_grad():
        outs = model(x)
    assert outs[-1].shape[-2:] == (63, 94)
    assert all(torch.isfinite(o).all() for o in outs)
    layer = make_layer('odconv-4x', '3x3', dtype=torch.float16)[0].eval()
    with torch.no_grad():
        out = layer(torch.full((1, layer.in_channels, 1500, 1500), 0.5,
                               dtype=torch.float16))
    assert torch.isfinite(out).all()


def _quiet_kernels(layer):
    """Scale the convolution weights down (not those of the attention
    branch), so that large inputs give outputs that fit in float16."""
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if not name.startswith(('attention.', 'fc')):
                param.mul_(1e-3)
    return layer


@pytest.mark.parametrize('layer_name', LAYERS)
def test_fp16_autocast_with_large_activations(layer_name):
    """Activations near float16's limit: the attention branch sums them
    over channels, which overflows in float16; mmdyn runs it in float32
    under autocast, so the attentions stay finite and the output matches
    float32. DCD's Phi(x) is not squashed by a softmax or sigmoid: it grows
    with the input like an activation, so DCD gets inputs ten times smaller,
    for which Phi fits in float16."""
    layer = _quiet_kernels(
        make_layer(layer_name, '3x3', dtype=torch.float32)[0]).eval()
    scale = 3e3 if layer_name.startswith('dcd') else 3e4
    x = scale * (1 + torch.rand(2, layer.in_channels, 8, 8))
    with torch.no_grad():
        expected = layer(x)
        expected_maps = layer.attention_maps(x)
        with torch.autocast(x.device.type, dtype=torch.float16):
            got = layer(x.half())
            maps = layer.attention_maps(x.half())
    assert got.dtype == torch.float16
    assert torch.isfinite(expected).all()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), expected, rtol=2e-2,
                               atol=2e-2 * expected.abs().max().item())
    for name, value in maps.items():
        assert torch.isfinite(value).all(), name
        torch.testing.assert_close(value.float(), expected_maps[name],
                                   rtol=1e-2, atol=1e-2)
