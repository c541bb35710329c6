"""Loading the authors' ImageNet checkpoints (built here in their exact
format: key names, shapes, nesting, ``module.`` prefixes, from the key lists
in tests/data/official_keys), static checkpoints (inflation), the converter,
and the errors for checkpoints that do not fit."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS

import mmdyn  # noqa: F401
from mmdyn.checkpoint import (CheckpointError, CheckpointMismatchError,
                              load_backbone_checkpoint, recognise_backbone)
from mmdyn.layers import BaseDynamicConv2d, set_temperature
from conftest import REPO

KEYS = osp.join(REPO, 'tests', 'data', 'official_keys')

# released file -> (key list, backbone config)
OFFICIAL = {
    'odconv1x_resnet50': dict(type='ODResNet', depth=50, kernel_num=1),
    'odconv4x_resnet50': dict(type='ODResNet', depth=50, kernel_num=4),
    'dcd_resnet50': dict(type='DCDResNet', depth=50),
    'odconv1x_mobilenetv2_100': dict(type='ODMobileNetV2', kernel_num=1),
    'odconv4x_mobilenetv2_100': dict(type='ODMobileNetV2', kernel_num=4),
    'dcd_mobilenetv2_100_fcsq16': dict(type='DCDMobileNetV2'),
}

# where released MobileNetV2 keys belong in mmdyn (written from the layouts
# described in ../shared/specs/official_formats.md, not from mmdyn's code)
EXPECTED_PLACES = {
    'odconv4x_mobilenetv2_100': {
        'features.0.0.weight': 'conv1.conv.weight',
        'features.0.1.running_var': 'conv1.bn.running_var',
        'features.1.conv.0.0.weight': 'layer1.0.depthwise_conv.conv.weight',
        'features.1.conv.1.weight': 'layer1.0.linear_conv.conv.weight',
        'features.1.conv.2.bias': 'layer1.0.linear_conv.bn.bias',
        'features.2.conv.0.0.attention.fc.weight':
        'layer2.0.expand_conv.conv.attention.fc.weight',
        'features.2.conv.1.1.weight': 'layer2.0.depthwise_conv.bn.weight',
        'features.2.conv.2.weight': 'layer2.0.linear_conv.conv.weight',
        'features.2.conv.3.running_mean':
        'layer2.0.linear_conv.bn.running_mean',
        'features.13.conv.1.0.attention.spatial_fc.weight':
        'layer5.2.depthwise_conv.conv.attention.spatial_fc.weight',
        'features.17.conv.2.weight': 'layer7.0.linear_conv.conv.weight',
        'features.18.0.weight': 'conv2.conv.weight',
        'features.18.1.weight': 'conv2.bn.weight',
    },
    'dcd_mobilenetv2_100_fcsq16': {
        'features.0.0.weight': 'conv1.conv.weight',
        'features.1.conv.3.weight': 'layer1.0.linear_conv.conv.weight',
        'features.1.conv.4.bias': 'layer1.0.linear_conv.bn.bias',
        'features.2.conv.0.conv_q.weight':
        'layer2.0.expand_conv.conv.q.weight',
        'features.2.conv.0.fc.1.fc.0.weight':
        'layer2.0.expand_conv.conv.fc.1.fc.0.weight',
        'features.2.conv.3.weight': 'layer2.0.depthwise_conv.conv.weight',
        'features.2.conv.6.conv_p.weight':
        'layer2.0.linear_conv.conv.p.weight',
        'features.2.conv.7.running_var': 'layer2.0.linear_conv.bn.running_var',
        'conv.0.weight': 'conv2.conv.weight',
        'conv.1.bias': 'conv2.bn.bias',
    },
}


def official_state_dict(name, seed=0):
    """Random tensors under the released names and shapes, as the authors'
    code saves them (DataParallel/DDP: every key starts with 'module.')."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    with open(osp.join(KEYS, f'{name}.txt')) as f:
        for line in f:
            key, shape = line.strip().split(' ', 1)
            shape = tuple(int(s) for s in shape.strip('()').split(',') if s)
            if key.endswith('num_batches_tracked'):
                value = torch.tensor(1000)
            elif key.endswith('running_var'):
                value = torch.rand(shape, generator=generator) + 0.5
            elif key.endswith(('bn.weight', 'bn1.weight', 'bn2.weight',
                               'bn3.weight')) or '.1.weight' in key and len(
                                   shape) == 1:
                value = torch.rand(shape, generator=generator) * 0.2 + 0.9
            elif len(shape) >= 2:  # a trained-like scale: gain below 1
                fan_in = 1
                for size in (shape[-3:] if len(shape) >= 4 else shape[-1:]):
                    fan_in *= size
                value = torch.randn(shape, generator=generator) * (
                    0.5 / fan_in**0.5)
            else:
                value = torch.randn(shape, generator=generator) * 0.05
            state[f'module.{key}'] = value
    return state


def save_official(state, path):
    """The authors' main.py saves this dict as checkpoint.pth.tar."""
    torch.save({'epoch': 120, 'state_dict': state, 'best_acc': 77.0,
                'optimizer': {'state': {}, 'param_groups': [{'lr': 0.1}]}},
               path)


def build(cfg, checkpoint=None):
    if checkpoint is not None:
        cfg = dict(cfg, init_cfg=dict(type='Pretrained',
                                      checkpoint=checkpoint))
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize('name', OFFICIAL)
def test_official_checkpoint_loads_exactly_and_survives_conversion(
        name, tmp_path):
    official = official_state_dict(name)
    src = str(tmp_path / f'{name}.pth.tar')
    save_official(official, src)
    cfg = OFFICIAL[name]

    direct = build(cfg, src)  # init_cfg Pretrained on the released file
    loaded = direct.state_dict()
    plain = {k[len('module.'):]: v for k, v in official.items()}
    for key, place in EXPECTED_PLACES.get(name, {}).items():
        assert torch.equal(loaded[place], plain[key]), (key, place)
    if 'resnet' in name:  # same names as the release
        for key, value in plain.items():
            if not key.startswith(('fc.', 'classifier.')):
                assert torch.equal(loaded[key], value), key
    # every released tensor but the classifier's is somewhere in the model
    backbone_values = sum(v.numel() for k, v in plain.items()
                          if not k.startswith(('fc.', 'classifier.')))
    assert backbone_values == sum(v.numel() for v in loaded.values())
    assert recognise_backbone(plain) == dict(
        cfg, **({'widen_factor': 1.0} if 'mobilenet' in name else {}))

    dst = str(tmp_path / f'{name}_mmdyn.pth')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'model_converters',
                                  'official_to_mmdyn.py'), src, dst],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert 'dropped' in result.stdout and 'wrote' in result.stdout
    converted = build(cfg, dst)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(direct(x), converted(x)):
            assert torch.isfinite(a).all()
            assert torch.equal(a, b)
    # the converter never overwrites what is there unless told to
    again = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'model_converters',
                                  'official_to_mmdyn.py'), src, dst],
        capture_output=True, text=True, cwd=REPO)
    assert again.returncode != 0 and '--force' in again.stderr


def test_temperature_is_one_after_loading_whatever_it_was(tmp_path):
    src = str(tmp_path / 'od.pth.tar')
    save_official(official_state_dict('odconv1x_mobilenetv2_100'), src)
    model = MODELS.build(dict(OFFICIAL['odconv1x_mobilenetv2_100'],
                              init_cfg=dict(type='Pretrained',
                                            checkpoint=src)))
    set_temperature(model, 30.0)  # e.g. left over from ImageNet annealing
    model.init_weights()
    layers = [m for m in model.modules() if isinstance(m, BaseDynamicConv2d)]
    assert layers and all(m.temperature == 1.0 for m in layers)


@pytest.mark.parametrize('static,dynamic', [
    (dict(type='mmdet.ResNet', depth=18), dict(type='ODResNet', depth=18,
                                               kernel_num=4)),
    (dict(type='mmdet.ResNet', depth=18), dict(type='DCDResNet', depth=18)),
    (dict(type='mmdet.ResNet', depth=50), dict(type='DyConvResNet',
                                               depth=50)),
    (dict(type='mmdet.ResNet', depth=50), dict(type='CondConvResNet',
                                               depth=50)),
    (dict(type='mmdet.MobileNetV2', widen_factor=0.5),
     dict(type='ODMobileNetV2', widen_factor=0.5, kernel_num=4)),
    (dict(type='mmdet.MobileNetV2', widen_factor=0.5),
     dict(type='DCDMobileNetV2', widen_factor=0.5)),
])
def test_static_checkpoint_inflates_to_the_same_function(
        static, dynamic, tmp_path):
    torch.manual_seed(0)
    reference = MODELS.build(static)
    reference.init_weights()
    with torch.no_grad():  # a "trained" network: no zero-init branches
        for name, param in reference.named_parameters():
            param.copy_(torch.randn_like(param) * 0.05 +
                        (1.0 if name.endswith('bn.weight') or '.bn' in name
                         and name.endswith('weight') else 0.0))
    state = dict(reference.state_dict())
    state['fc.weight'] = torch.randn(10, 8)  # a classifier to drop
    path = str(tmp_path / 'static.pth')
    torch.save(state, path)
    model = MODELS.build(dict(dynamic, init_cfg=dict(type='Pretrained',
                                                     checkpoint=path)))
    report = load_backbone_checkpoint(model, path)
    assert report.inflated and report.dropped == ['fc.weight']
    model.eval()
    reference.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), reference(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_detector_checkpoint_with_backbone_prefix_loads(tmp_path):
    source = build(dict(type='ODResNet', depth=18, kernel_num=4))
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    path = str(tmp_path / 'detector.pth')
    torch.save({'meta': {'epoch': 12}, 'state_dict': state}, path)
    for prefix in (None, 'backbone.'):
        model = MODELS.build(dict(type='ODResNet', depth=18, kernel_num=4))
        load_backbone_checkpoint(model, path, prefix=prefix)
        for key, value in source.state_dict().items():
            assert torch.equal(model.state_dict()[key], value)


@pytest.mark.parametrize('name,cfg,messages', [
    ('odconv4x_resnet50', dict(type='ODResNet', depth=50, kernel_num=1),
     ['ODConv (kernel_num=4)', 'layer1.0.conv1.weight: checkpoint '
      '(4, 64, 64, 1, 1) vs backbone (1, 64, 64, 1, 1)', 'kernel_num']),
    ('dcd_resnet50', dict(type='ODResNet', depth=50),
     ['looks like DCD', 'missing', 'layer1.0.conv1.attention.fc.weight',
      'no place for', 'layer1.0.conv1.q.weight']),
    ('odconv1x_resnet50', dict(type='ODResNet', depth=101),
     ['missing', 'layer3.6.conv1.weight']),
    ('odconv1x_mobilenetv2_100', dict(type='ODMobileNetV2',
                                      widen_factor=0.5),
     ['shape mismatches', 'conv1.conv.weight: checkpoint (32, 3, 3, 3) vs '
      'backbone (16, 3, 3, 3)']),
])
def test_checkpoint_that_does_not_fit_names_keys_and_shapes(
        name, cfg, messages, tmp_path):
    path = str(tmp_path / 'ckpt.pth.tar')
    save_official(official_state_dict(name), path)
    model = MODELS.build(cfg)
    with pytest.raises(CheckpointMismatchError) as info:
        load_backbone_checkpoint(model, path)
    for message in messages:
        assert message in str(info.value)


def test_unreadable_files_get_a_clear_error(tmp_path):
    model = MODELS.build(dict(type='ODResNet', depth=18))
    with pytest.raises(FileNotFoundError, match='not found'):
        load_backbone_checkpoint(model, str(tmp_path / 'absent.pth'))
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(CheckpointError, match='text file, not a PyTorch'):
        load_backbone_checkpoint(model, str(text))
    good = tmp_path / 'good.pth'
    torch.save(model.state_dict(), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='truncated PyTorch checkpoint'):
        load_backbone_checkpoint(model, str(truncated))
    empty = tmp_path / 'empty.pth'
    torch.save({'state_dict': {}}, empty)
    with pytest.raises(CheckpointError, match='empty state dict'):
        load_backbone_checkpoint(model, str(empty))
    odd = tmp_path / 'odd.pth'
    torch.save({'weights': [1, 2]}, odd)
    with pytest.raises(CheckpointError, match='no state dict'):
        load_backbone_checkpoint(model, str(odd))


def test_pretrained_init_cfg_refuses_a_wrong_checkpoint(tmp_path):
    """MMEngine's own Pretrained init would only warn and keep random
    weights; mmdyn's backbones stop."""
    path = str(tmp_path / 'wrong.pth.tar')
    save_official(official_state_dict('odconv4x_mobilenetv2_100'), path)
    model = MODELS.build(dict(type='ODMobileNetV2', kernel_num=1,
                              init_cfg=dict(type='Pretrained',
                                            checkpoint=path)))
    with pytest.raises(CheckpointMismatchError, match='kernel_num=4'):
        model.init_weights()
