"""The ODConv authors' COCO detectors (MMDetection 2.x checkpoints) convert
for MMDetection 3.x with mmdyn's configs and load strictly."""
import os.path as osp
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmdyn.checkpoint import CheckpointMismatchError, load_checkpoint_file
from mmdyn.checkpoint.detector import (load_mmdet2_detector_state_dict,
                                       table_4_config_for)

from conftest import REPO
sys.path.insert(0, osp.join(REPO, 'tools', 'model_converters'))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import mmdet2_detector_to_mmdyn as converter  # noqa: E402
from test_checkpoints import official_state_dict  # noqa: E402

COCO_CLASSES = tuple(f'class{i}' for i in range(80))


def build_detector(name):
    init_default_scope('mmdet')
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def static_resnet50_keys():
    """A static ResNet-50 as the ODConv authors' baseline (torchvision
    layout, classifier kept), from mmdet's ResNet, which shares the names."""
    init_default_scope('mmdet')
    resnet = MODELS.build(dict(type='ResNet', depth=50))
    state = {f'module.{k}': torch.randn_like(v.float()).to(v.dtype)
             for k, v in resnet.state_dict().items()}
    state['module.fc.weight'] = torch.randn(1000, 2048)
    state['module.fc.bias'] = torch.randn(1000)
    return state


def mmdet2_checkpoint(config, backbone_keys):
    """What the ODConv authors' MMDetection 2.x training saved: backbone in
    their layout (classifier included), neck and heads under the names 3.x
    kept, meta with CLASSES, the optimizer."""
    heads = {k: torch.randn_like(v.float()).to(v.dtype)
             for k, v in build_detector(config).state_dict().items()
             if not k.startswith('backbone.')}
    backbone = {'backbone.' + k[len('module.'):]: v
                for k, v in backbone_keys.items()}
    return {
        'meta': {'mmdet_version': '2.11.0', 'CLASSES': COCO_CLASSES,
                 'epoch': 12, 'iter': 87936, 'config': 'model = dict()'},
        'state_dict': {**backbone, **heads},
        'optimizer': {'state': {}, 'param_groups': [{'lr': 0.0002}]},
    }


@pytest.mark.slow
@pytest.mark.parametrize('config,keys', [
    ('odconv/mask-rcnn_mobilenetv2-odconv-4x_fpn_1x_coco.py',
     lambda: official_state_dict('odconv4x_mobilenetv2_100')),
    ('baseline/faster-rcnn_r50_fpn_1x_coco.py', static_resnet50_keys),
])
def test_released_detector_converts_and_loads_strictly(config, keys, tmp_path,
                                                       capsys):
    released = mmdet2_checkpoint(config, keys())
    src, dst = tmp_path / 'released.pth', tmp_path / 'out' / 'converted.pth'
    torch.save(released, src)
    converter.main([str(src), str(dst)])
    printed = capsys.readouterr().out
    assert f'config: configs/{config}' in printed
    assert f'tools/test.py configs/{config} {dst}' in printed
    assert 'dropped: backbone.' in printed  # the ImageNet classifier
    converted = load_checkpoint_file(str(dst))
    assert converted['meta']['dataset_meta']['classes'] == COCO_CLASSES
    detector = build_detector(config)
    load_checkpoint(detector, str(dst), strict=True)  # every key fits
    state = detector.state_dict()
    source = released['state_dict']
    for key in ('neck.fpn_convs.0.conv.weight', 'rpn_head.rpn_reg.bias',
                'roi_head.bbox_head.fc_cls.weight'):
        assert torch.equal(state[key], source[key])
    if 'mobilenetv2' in config:  # authors' features.N -> mmdet's layout
        assert torch.equal(state['backbone.conv2.conv.weight'],
                           source['backbone.features.18.0.weight'])
        assert torch.equal(
            state['backbone.layer2.0.expand_conv.conv.attention.fc.weight'],
            source['backbone.features.2.conv.0.0.attention.fc.weight'])
    else:
        assert torch.equal(state['backbone.layer4.2.conv3.weight'],
                           source['backbone.layer4.2.conv3.weight'])
    # nothing is overwritten without --force
    with pytest.raises(SystemExit, match='--force'):
        converter.main([str(src), str(dst)])
    converter.main([str(src), str(dst), '--force'])


@pytest.mark.parametrize('name,config', [
    ('odconv4x_resnet50', 'odconv/{}_r50-odconv-4x_fpn_1x_coco.py'),
    ('odconv1x_resnet50', 'odconv/{}_r50-odconv-1x_fpn_1x_coco.py'),
    ('odconv1x_mobilenetv2_100',
     'odconv/{}_mobilenetv2-odconv-1x_fpn_1x_coco.py'),
    ('dcd_resnet50', 'dcd/{}_r50-dcd_fpn_1x_coco.py'),
])
@pytest.mark.parametrize('detector', ['faster-rcnn', 'mask-rcnn'])
def test_config_is_recognised_from_the_checkpoint(name, config, detector):
    state = {'backbone.' + k[len('module.'):]: v
             for k, v in official_state_dict(name).items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    if detector == 'mask-rcnn':
        state['roi_head.mask_head.conv_logits.weight'] = torch.zeros(1)
    assert table_4_config_for(state) == config.format(detector)


def test_wrong_config_names_the_keys_that_do_not_fit(tmp_path):
    config = 'odconv/mask-rcnn_mobilenetv2-odconv-4x_fpn_1x_coco.py'
    released = mmdet2_checkpoint(
        config, official_state_dict('odconv4x_mobilenetv2_100'))
    faster = build_detector(
        'odconv/faster-rcnn_mobilenetv2-odconv-4x_fpn_1x_coco.py')
    with pytest.raises(CheckpointMismatchError) as error:
        load_mmdet2_detector_state_dict(faster, released['state_dict'], 'x')
    assert 'roi_head.mask_head.convs.0.conv.weight' in str(error.value)
    assert '12 checkpoint keys the model has no place for' in str(
        error.value)
    # the wrong kernel number fails in the backbone, naming what it is
    one_kernel = build_detector(
        'odconv/mask-rcnn_mobilenetv2-odconv-1x_fpn_1x_coco.py')
    with pytest.raises(CheckpointMismatchError, match='kernel_num=4'):
        load_mmdet2_detector_state_dict(one_kernel, released['state_dict'],
                                        'x')


def test_backbone_checkpoint_is_not_a_detector(tmp_path):
    src = tmp_path / 'imagenet.pth'
    torch.save({'state_dict': official_state_dict('odconv1x_resnet50')}, src)
    with pytest.raises(SystemExit, match='not a detector checkpoint'):
        converter.main([str(src), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'out.pth').exists()
