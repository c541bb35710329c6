"""The dynamic ResNet and MobileNetV2 backbones: registry, shapes, MMDetection
arguments, placement of the dynamic convs and parameter counts."""
import pytest
import torch
from mmdet.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import mmdyn  # noqa: F401
from mmdyn.layers import BaseDynamicConv2d

RESNETS = ['ODResNet', 'DCDResNet', 'DyConvResNet', 'CondConvResNet']
MOBILENETS = ['ODMobileNetV2', 'DCDMobileNetV2', 'DyConvMobileNetV2',
              'CondConvMobileNetV2']

# Backbone parameters without the classifier, in millions: the ODConv
# paper's Table 4 for R50 / MobileNetV2 1.0x and its CondConv and DyConv
# rows; ODConv and DCD as the authors' released code builds them (Table 4
# prints DCD R50 27.79M and MobileNetV2 4.44M because it keeps part of
# DCD's dynamic classifier; the released MobileNetV2 uses fc_squeeze=16).
TABLE4_PARAMS = [
    (dict(type='mmdet.ResNet', depth=50), 23.51),
    (dict(type='CondConvResNet', depth=50), 113.46),
    (dict(type='DyConvResNet', depth=50), 98.83),
    (dict(type='DCDResNet', depth=50), 27.56),
    (dict(type='ODResNet', depth=50, kernel_num=1), 26.59),
    (dict(type='ODResNet', depth=50, kernel_num=4), 88.62),
    (dict(type='mmdet.MobileNetV2'), 2.22),
    (dict(type='CondConvMobileNetV2'), 12.63),
    (dict(type='DyConvMobileNetV2'), 11.12),
    (dict(type='DCDMobileNetV2'), 4.26),
    (dict(type='ODMobileNetV2', kernel_num=1), 3.66),
    (dict(type='ODMobileNetV2', kernel_num=4), 10.23),
]


def build(cfg):
    """Build and initialise, as MMEngine's runner does."""
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def count(model):
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize('cfg,expected', TABLE4_PARAMS,
                         ids=[f"{c['type']}-{c.get('kernel_num', '')}"
                              for c, _ in TABLE4_PARAMS])
def test_parameter_counts_match_table4(cfg, expected):
    got = count(build(cfg))
    assert abs(got - expected) / expected < 0.01, (got, expected)


@pytest.mark.parametrize('name', RESNETS + MOBILENETS)
def test_scoped_and_plain_names_build_the_same_class(name):
    extra = dict(depth=18) if 'ResNet' in name else dict(widen_factor=0.5)
    scoped = build(dict(type=f'mmdyn.{name}', **extra))
    plain = build(dict(type=name, **extra))
    assert type(scoped) is type(plain)
    assert type(plain).__name__ == name


def check_outputs_and_gradients(model, channels):
    """Four outputs with ``channels`` at strides 4, 8, 16, 32; every
    trainable parameter gets a gradient."""
    model.train()
    outs = model(torch.randn(2, 3, 64, 96))
    assert [o.shape[1] for o in outs] == channels
    assert [o.shape[-2:] for o in outs] == [
        (64 // s, 96 // s) for s in (4, 8, 16, 32)]
    sum(o.mean() for o in outs).backward()
    unused = [n for n, p in model.named_parameters()
              if p.requires_grad and p.grad is None]
    assert not unused  # DDP needs no find_unused_parameters


@pytest.mark.parametrize('name', RESNETS)
@pytest.mark.parametrize('depth,channels', [(18, [64, 128, 256, 512]),
                                            (50, [256, 512, 1024, 2048])])
def test_resnet_outputs_fpn_inputs_and_trains(name, depth, channels):
    check_outputs_and_gradients(
        build(dict(type=name, depth=depth, norm_eval=False)), channels)


@pytest.mark.parametrize('name,widen,channels', [
    ('ODMobileNetV2', 1.0, [24, 32, 96, 1280]),
    ('DCDMobileNetV2', 1.0, [24, 32, 96, 1280]),
    ('DyConvMobileNetV2', 0.75, [24, 24, 72, 1280]),
    ('CondConvMobileNetV2', 0.5, [16, 16, 48, 1280]),
])
def test_mobilenet_outputs_fpn_inputs_and_trains(name, widen, channels):
    check_outputs_and_gradients(build(dict(type=name, widen_factor=widen)),
                                channels)


def dynamic_layers(model):
    return {n: m for n, m in model.named_modules()
            if isinstance(m, BaseDynamicConv2d)}


def test_resnet_placement():
    od = dynamic_layers(build(dict(type='ODResNet', depth=50)))
    assert len(od) == 16 * 3  # every conv of the 16 bottlenecks
    assert 'conv1' not in od and not any('downsample' in n for n in od)
    dy = dynamic_layers(build(dict(type='DyConvResNet', depth=50)))
    assert len(dy) == 16 * 3 + 4  # and the 4 downsample shortcuts
    cond = dynamic_layers(build(dict(type='CondConvResNet', depth=50)))
    assert len(cond) == 3 * 3
    assert {n.rsplit('.', 1)[0] for n in cond} == {
        'layer4.0', 'layer4.1', 'layer4.2'}


def test_mobilenet_placement():
    od = dynamic_layers(build(dict(type='ODMobileNetV2')))
    assert 'conv1.conv' not in od and 'conv2.conv' in od
    assert len(od) == 2 + 16 * 3 + 1  # first block has no expansion
    dcd = dynamic_layers(build(dict(type='DCDMobileNetV2')))
    assert len(dcd) == 16 * 2  # 1x1 convs of the 16 expanding blocks
    assert all(m.kernel_size == (1, 1) for m in dcd.values())
    assert 'conv2.conv' not in dcd
    cond = dynamic_layers(build(dict(type='CondConvMobileNetV2')))
    assert {n.split('.')[0] + '.' + n.split('.')[1] for n in cond} == {
        'layer5.1', 'layer5.2', 'layer6.0', 'layer6.1', 'layer6.2',
        'layer7.0'}


@pytest.mark.parametrize('cfg', [
    dict(type='ODResNet', depth=18, kernel_num=4),
    dict(type='DCDResNet', depth=18),
    dict(type='ODMobileNetV2', widen_factor=0.5, kernel_num=4),
    dict(type='DCDMobileNetV2', widen_factor=0.5),
])
def test_norm_eval_covers_attention_batchnorms(cfg):
    model = build(dict(cfg, norm_eval=True)).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    attention_norms = [m for n, m in model.named_modules()
                       if isinstance(m, _BatchNorm) and (
                           '.attention.' in n or n.endswith(('.bn1', '.bn2'))
                           and '.conv' in n)]
    assert attention_norms
    assert not any(m.training for m in norms)
    # batch size 1 trains, because the attention BatchNorms are in eval mode
    sum(o.sum() for o in model(torch.randn(1, 3, 32, 32))).backward()


@pytest.mark.parametrize('cfg,frozen_prefixes,trainable_prefix', [
    (dict(type='ODResNet', depth=18, frozen_stages=1),
     ('conv1.', 'bn1.', 'layer1.'), 'layer2.'),
    (dict(type='DCDMobileNetV2', widen_factor=0.5, frozen_stages=2),
     ('conv1.', 'layer1.', 'layer2.'), 'layer3.'),
])
def test_frozen_stages_freeze_attention_branches(cfg, frozen_prefixes,
                                                 trainable_prefix):
    model = build(cfg).train()
    params = dict(model.named_parameters())
    frozen = [n for n in params if n.startswith(frozen_prefixes)]
    assert any('attention' in n or '.fc' in n for n in frozen)
    assert all(not params[n].requires_grad for n in frozen)
    assert all(p.requires_grad for n, p in params.items()
               if n.startswith(trainable_prefix))
    # mmdet's ResNet puts its frozen stages in eval mode, stem included;
    # its MobileNetV2 the frozen stages but not the stem
    eval_prefixes = frozen_prefixes if 'ResNet' in cfg['type'] else \
        frozen_prefixes[1:]
    for name, module in model.named_modules():
        if name.startswith(eval_prefixes):
            assert not module.training, name


@pytest.mark.slow
@pytest.mark.parametrize('name', RESNETS + MOBILENETS)
def test_with_cp_gives_the_same_gradients(name):
    extra = dict(depth=18) if 'ResNet' in name else dict(widen_factor=0.5)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = build(dict(type=name, with_cp=with_cp, norm_eval=True,
                           **extra)).train()
        x = torch.randn(2, 3, 32, 32)
        sum(o.sum() for o in model(x)).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):  # recomputation may reorder float32 sums
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name', RESNETS + MOBILENETS)
def test_initialised_model_is_finite_with_frozen_norms(name):
    """A freshly initialised backbone whose BatchNorms use running
    statistics (norm_eval) must not overflow: zero_init_residual (ResNet)
    keeps the dynamic residual branches quiet at the start."""
    extra = dict(depth=18) if 'ResNet' in name else dict(widen_factor=0.5)
    model = build(dict(type=name, norm_eval=True, **extra)).train()
    outs = model(torch.randn(2, 3, 64, 64) * 3)
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('name', RESNETS + MOBILENETS)
def test_temperature_reaches_every_layer(name):
    extra = dict(depth=18) if 'ResNet' in name else dict(widen_factor=0.5)
    model = build(dict(type=name, **extra))
    layers = dynamic_layers(model).values()
    assert layers and all(m.temperature == 1.0 for m in layers)
    model = build(dict(type=name, temperature=30.0, **extra))
    assert all(m.temperature == 30.0 for m in dynamic_layers(model).values())


@pytest.mark.parametrize('ours,theirs', [
    (dict(type='DynamicResNet', depth=50), dict(type='mmdet.ResNet',
                                                depth=50)),
    (dict(type='DynamicMobileNetV2', widen_factor=0.75),
     dict(type='mmdet.MobileNetV2', widen_factor=0.75)),
])
def test_without_dynamic_convs_the_bases_are_mmdets_backbones(ours, theirs):
    """The base classes subclass MMDetection's backbones: without a
    dynamic conv config they have its layers and keys, and compute what it
    computes (e.g. the static baseline with CUDA graphs)."""
    torch.manual_seed(0)
    mine = build(dict(ours, norm_eval=True))
    mmdet_model = build(dict(theirs, norm_eval=True))
    mine.train()
    mmdet_model.train()  # returns None: mmdet's train() does
    assert list(mine.state_dict()) == list(mmdet_model.state_dict())
    assert not dynamic_layers(mine)
    mmdet_model.load_state_dict(mine.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(mine(x), mmdet_model(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sync_bn_reaches_attention_branches():
    model = build(dict(type='ODResNet', depth=18,
                       norm_cfg=dict(type='SyncBN', requires_grad=True)))
    attention_bn = model.layer1[0].conv1.attention.bn
    assert isinstance(attention_bn, torch.nn.SyncBatchNorm)


@pytest.mark.parametrize('cfg,message', [
    (dict(type='ODResNet', depth=50, out_indices=(0, 4)), 'out_indices'),
    (dict(type='DCDResNet', depth=50, frozen_stages=7), 'frozen_stages'),
    (dict(type='CondConvResNet', depth=50, num_dynamic_blocks=-1),
     'num_dynamic_blocks'),
    (dict(type='ODResNet', depth=50, kernel_num=0), 'kernel_num'),
    (dict(type='ODResNet', depth=50, temperature=0), 'temperature'),
    (dict(type='DyConvResNet', depth=50, reduction=0), 'reduction'),
    (dict(type='ODMobileNetV2', out_indices=(8, )), 'out_indices'),
    (dict(type='ODMobileNetV2', frozen_stages=8), 'frozen_stages'),
    (dict(type='DCDMobileNetV2', widen_factor=0), 'widen_factor'),
    (dict(type='DCDMobileNetV2', fc_squeeze=0), 'fc_squeeze'),
])
def test_invalid_backbone_arguments_name_the_argument(cfg, message):
    with pytest.raises(ValueError, match=message):
        build(cfg)


def test_unknown_depth_is_a_key_error_as_in_mmdet():
    with pytest.raises(KeyError, match=r'depth must be one of \[18, 34'):
        build(dict(type='ODResNet', depth=42))
