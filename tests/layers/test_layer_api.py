"""The layers' arguments and behaviour besides their numbers: building
through mmcv, temperature, errors, the official parameter layouts, and the
start from a static conv."""
import pytest
import torch
from mmcv.cnn import build_conv_layer

import mmdyn  # noqa: F401  (registers the layers)
from layer_cases import LAYERS, fused_mode, make_layer
from mmdyn.layers import (BaseDynamicConv2d, CondConv2d, DCDConv2d, DyConv2d,
                          ODConv2d, set_temperature)


@pytest.mark.parametrize('type_name', ['ODConv2d', 'DCDConv2d', 'DyConv2d',
                                       'CondConv2d'])
def test_build_conv_layer_builds_every_registered_name(type_name):
    layer = build_conv_layer(
        dict(type=type_name), 16, 32, 3, stride=2, padding=1, dilation=1,
        groups=1, bias=False)
    assert type(layer).__name__ == type_name
    assert isinstance(layer, BaseDynamicConv2d)
    assert layer.temperature == 1.0
    out = layer.eval()(torch.randn(1, 16, 15, 15))
    assert out.shape == (1, 32, 8, 8)


@pytest.mark.parametrize('type_name', ['ODConv2d', 'DCDConv2d', 'DyConv2d',
                                       'CondConv2d'])
def test_conv_module_accepts_every_layer_and_keeps_its_init(type_name):
    from mmcv.cnn import ConvModule
    torch.manual_seed(0)
    conv_cfg = dict(type=type_name)
    module = ConvModule(16, 32, 3, stride=2, padding=1, conv_cfg=conv_cfg,
                        norm_cfg=dict(type='BN'))
    torch.manual_seed(0)
    plain = build_conv_layer(conv_cfg, 16, 32, 3, stride=2, padding=1,
                             bias=False)
    for (name, got), (_, expected) in zip(module.conv.state_dict().items(),
                                          plain.state_dict().items()):
        assert torch.equal(got, expected), name
    out = module.eval()(torch.randn(2, 16, 9, 9))
    assert out.shape == (2, 32, 5, 5)


def test_build_conv_layer_passes_method_arguments():
    layer = build_conv_layer(dict(type='ODConv2d', kernel_num=4), 16, 32, 3,
                             padding=1)
    assert layer.weight.shape == (4, 32, 16, 3, 3)
    assert layer.attention.kernel_fc.out_channels == 4


@pytest.mark.parametrize('layer_name', LAYERS)
def test_temperature_default_setter_and_set_temperature(layer_name):
    layer, _ = make_layer(layer_name, '3x3')
    layer.temperature = 1.0
    model = torch.nn.Sequential(layer, torch.nn.ReLU())
    assert set_temperature(model, 30.0) == 1
    assert layer.temperature == 30.0
    layer.update_temperature(2)
    assert layer.temperature == 2.0
    for bad in (0, -1.0, float('nan'), float('inf'), 'hot', None):
        with pytest.raises(ValueError, match='temperature'):
            layer.temperature = bad


def test_high_temperature_flattens_the_attentions():
    layer, _ = make_layer('odconv-4x', '3x3')
    layer.eval()
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    layer.temperature = 1e6
    att = layer.attention(x, layer.temperature)
    for values, flat in ((att.kernel, 0.25), (att.channel, 0.5),
                         (att.filter, 0.5), (att.spatial, 0.5)):
        torch.testing.assert_close(values, torch.full_like(values, flat),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize('cls', [ODConv2d, DCDConv2d, DyConv2d, CondConv2d])
@pytest.mark.parametrize('kwargs,message', [
    (dict(in_channels=10, out_channels=12, groups=4), 'divisible by groups'),
    (dict(in_channels=0), 'in_channels must be a positive int'),
    (dict(kernel_size=0), 'kernel_size'),
    (dict(stride=(1, 0)), 'stride'),
    (dict(padding=-1), 'padding'),
    (dict(temperature=0), 'temperature'),
])
def test_invalid_arguments_raise_a_clear_error(cls, kwargs, message):
    args = dict(in_channels=8, out_channels=8, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        cls(**args)
    assert cls.__name__ in str(info.value)


@pytest.mark.parametrize('cls', [ODConv2d, DyConv2d, CondConv2d])
@pytest.mark.parametrize('kernel_num', [0, -2, 1.5, True])
def test_kernel_num_must_be_a_positive_int(cls, kernel_num):
    with pytest.raises(ValueError, match='kernel_num must be an int >= 1'):
        cls(8, 8, 3, kernel_num=kernel_num)


@pytest.mark.parametrize('cls', [ODConv2d, DyConv2d])
@pytest.mark.parametrize('reduction', [0, -0.5, float('nan')])
def test_reduction_must_be_positive(cls, reduction):
    with pytest.raises(ValueError, match='reduction must be a number > 0'):
        cls(8, 8, 3, reduction=reduction)


def test_dcd_rejects_unsupported_branch_settings():
    with pytest.raises(ValueError, match='pool_size must be 1 or 2'):
        DCDConv2d(8, 8, 3, pool_size=3)
    with pytest.raises(ValueError, match='latent_dim must be a positive'):
        DCDConv2d(8, 8, 3, latent_dim=0)


def test_odconv_explains_batch_one_training():
    layer = ODConv2d(8, 8, 3, padding=1).train()
    with pytest.raises(ValueError, match='norm_eval=True'):
        layer(torch.randn(1, 8, 5, 5))
    assert layer.eval()(torch.randn(1, 8, 5, 5)).shape == (1, 8, 5, 5)


def test_odconv_heads_follow_the_official_rules():
    """Depthwise: no filter head; 1x1: no spatial head; one kernel: no
    kernel head; these create no parameters (and no checkpoint keys)."""
    names = set(dict(ODConv2d(16, 16, 3, groups=16).named_parameters()))
    assert 'attention.filter_fc.weight' not in names
    assert 'attention.spatial_fc.weight' in names
    assert 'attention.kernel_fc.weight' not in names
    names = set(dict(ODConv2d(16, 32, 1, kernel_num=4).named_parameters()))
    assert 'attention.spatial_fc.weight' not in names
    assert {'attention.filter_fc.weight', 'attention.kernel_fc.weight'} \
        <= names
    layer = ODConv2d(64, 256, 1, kernel_num=4)
    assert layer.attention.fc.weight.shape == (16, 64, 1, 1)
    assert ODConv2d(512, 512, 3).attention.fc.weight.shape == (32, 512, 1, 1)


def test_dcd_default_dimensions_follow_the_released_resnet():
    layer = DCDConv2d(2048, 512, 1)
    assert layer.latent_dim == 45
    assert layer.fc_phi.weight.shape == (45 * 45, 128)
    assert layer.q.weight.shape == (45, 2048, 1, 1)
    assert layer.fc_scale.weight.shape == (512, 128)
    basic = DCDConv2d(64, 64, 3, padding=1, pool_size=2)
    assert basic.latent_dim == 16
    assert basic.fc[0].weight.shape == (16, 256)


def test_dcd_gate_is_twice_hardsigmoid():
    from mmdyn.layers.functional import hard_sigmoid_gate
    v = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(hard_sigmoid_gate(v),
                               2 * torch.nn.functional.hardsigmoid(v))


@pytest.mark.parametrize('geometry', ['1x1', '3x3-stride2', '3x3-grouped',
                                      'depthwise-stride2', '5x5-unpadded'])
@pytest.mark.parametrize('layer_name', LAYERS)
@pytest.mark.parametrize('bias', [False, True])
def test_load_static_weight_starts_as_the_static_conv(layer_name, geometry,
                                                      bias):
    layer, _ = make_layer(layer_name, geometry, bias=bias, temperature=3.0)
    weight = torch.randn(layer.out_channels,
                         layer.in_channels // layer.groups,
                         *layer.kernel_size, dtype=torch.float64)
    static_bias = torch.randn(layer.out_channels, dtype=torch.float64) \
        if bias else None
    layer.load_static_weight(weight, static_bias)
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, weight, static_bias,
                                          **layer.conv_kwargs(),
                                          groups=layer.groups)
    for training in (True, False):
        with fused_mode(layer_name):
            out = layer.train(training)(x)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    layer.train()(x).square().sum().backward()
    if layer_name.startswith('dyconv'):
        # K equal kernels: the softmax gets no gradient at the first step,
        # but the kernels get different ones (pi_k * G), so they part and
        # the attention learns from the next step on
        if layer.kernel_num > 1:
            grads = layer.weight.grad.flatten(1)
            assert not torch.allclose(grads[0], grads[1])
        return
    # the attention learns from the first step
    attention_grads = [p.grad for n, p in layer.named_parameters()
                       if n.startswith(('attention.', 'fc', 'p.'))]
    assert any(g is not None and g.abs().sum() > 0 for g in attention_grads)


def test_load_static_weight_rejects_a_weight_of_the_wrong_shape():
    layer = ODConv2d(8, 12, 3, kernel_num=4)
    with pytest.raises(ValueError, match=r'\(12, 8, 1, 1\).*\(12, 8, 3, 3\)'):
        layer.load_static_weight(torch.randn(12, 8, 1, 1))
    with pytest.raises(ValueError, match='bias=False'):
        layer.load_static_weight(torch.randn(12, 8, 3, 3), torch.randn(12))
