"""The 24 COCO configs (ODConv paper Table 4 rows x Faster/Mask R-CNN) and
the 24 one-stage ones (the same backbones in RetinaNet and FCOS): they are
MMDetection's 1x configs with only the backbone changed, they build, and
their backbones feed the FPN. COCO is not needed: pipelines are built
transform by transform."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmdet.registry import MODELS, TRANSFORMS
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import init_default_scope

import mmdyn  # noqa: F401
from conftest import REPO

METHODS = {
    'baseline': ['r50', 'mobilenetv2'],
    'condconv': ['r50-condconv-8x', 'mobilenetv2-condconv-8x'],
    'dyconv': ['r50-dyconv-4x', 'mobilenetv2-dyconv-4x'],
    'dcd': ['r50-dcd', 'mobilenetv2-dcd'],
    'odconv': ['r50-odconv-1x', 'r50-odconv-4x', 'mobilenetv2-odconv-1x',
               'mobilenetv2-odconv-4x'],
}
CONFIGS = [
    osp.join(method, f'{detector}_{backbone}_fpn_1x_coco.py')
    for method, backbones in METHODS.items() for backbone in backbones
    for detector in ('faster-rcnn', 'mask-rcnn')
]
ONE_STAGE = [
    osp.join(method, name) for method, backbones in METHODS.items()
    for backbone in backbones
    for name in (f'retinanet_{backbone}_fpn_1x_coco.py',
                 f'fcos_{backbone}_fpn_gn-head_1x_coco.py')
]
FPN_IN = {'r50': [256, 512, 1024, 2048], 'mobilenetv2': [24, 32, 96, 1280]}
BACKBONE_TYPES = {
    'r50': 'ResNet', 'mobilenetv2': 'MobileNetV2',
    'r50-condconv-8x': 'CondConvResNet',
    'mobilenetv2-condconv-8x': 'CondConvMobileNetV2',
    'r50-dyconv-4x': 'DyConvResNet',
    'mobilenetv2-dyconv-4x': 'DyConvMobileNetV2',
    'r50-dcd': 'DCDResNet', 'mobilenetv2-dcd': 'DCDMobileNetV2',
    'r50-odconv-1x': 'ODResNet', 'r50-odconv-4x': 'ODResNet',
    'mobilenetv2-odconv-1x': 'ODMobileNetV2',
    'mobilenetv2-odconv-4x': 'ODMobileNetV2',
}


# one R50 and one MobileNetV2 config, of two methods, in the quick subset
QUICK_TWO_STAGE = {'odconv/faster-rcnn_r50-odconv-4x_fpn_1x_coco.py',
                   'dcd/mask-rcnn_mobilenetv2-dcd_fpn_1x_coco.py'}
TWO_STAGE_PARAMS = [
    n if n in QUICK_TWO_STAGE else pytest.param(n, marks=pytest.mark.slow)
    for n in CONFIGS
]


def load(name):
    return Config.fromfile(osp.join(REPO, 'configs', name))


def backbone_name(name):
    return osp.basename(name).split('_')[1]


def without_scope(value):
    """A config tree without the ``_scope_`` keys MMEngine adds to what is
    inherited through ``mmdet::``."""
    if isinstance(value, dict):
        return {k: without_scope(v) for k, v in value.items()
                if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return type(value)(without_scope(v) for v in value)
    return value


def mmdet_base(name):
    detector = 'faster_rcnn/faster-rcnn' if name.startswith(
        'faster') else 'mask_rcnn/mask-rcnn'
    return get_config(f'mmdet::{detector}_r50_fpn_1x_coco.py')


def test_there_are_exactly_the_24_table_4_and_24_one_stage_configs():
    found = sorted(
        osp.relpath(p, osp.join(REPO, 'configs'))
        for p in glob.glob(osp.join(REPO, 'configs', '*', '*_1x_coco.py')))
    assert found == sorted(CONFIGS + ONE_STAGE) and len(found) == 48


@pytest.mark.parametrize('name', TWO_STAGE_PARAMS)
def test_config_is_mmdet_1x_with_only_the_backbone_changed(name):
    cfg = load(name)
    base = mmdet_base(osp.basename(name))
    assert cfg.custom_imports == dict(imports=['mmdyn'],
                                      allow_failed_imports=False)
    # everything but the backbone (and MobileNetV2's FPN inputs) is mmdet's
    ours, theirs = without_scope(cfg.to_dict()), base.to_dict()
    for d in (ours, theirs):
        for key in ('custom_imports', 'backbone', 'neck_in_channels'):
            d.pop(key, None)
        d['model'].pop('backbone')
        d['model']['neck'].pop('in_channels')
    assert ours == theirs
    # the 1x schedule on COCO 2017 (mmdet's, checked rather than assumed)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.optim_wrapper.optimizer.lr == 0.02
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.train_dataloader.dataset.ann_file.endswith(
        'instances_train2017.json')
    assert cfg.model.neck.type == 'FPN' and cfg.model.neck.out_channels == 256
    # backbone: temperature fixed at 1, no annealing, the paper's setting
    backbone = cfg.model.backbone
    arch = backbone_name(name)
    assert backbone.type == BACKBONE_TYPES[arch]
    assert cfg.model.neck.in_channels == FPN_IN[arch.split('-')[0]]
    assert backbone.get('temperature', 1.0) == 1.0
    # the authors' frozen layers: ResNet stem + layer1, MobileNetV2 features
    # 0-3 (conv1, layer1, layer2)
    assert backbone.frozen_stages == (1 if arch.startswith('r50') else 2)
    assert backbone.norm_eval is True
    assert not any(h.get('type') == 'TemperatureAnnealingHook'
                   for h in cfg.get('custom_hooks', []))
    assert backbone.init_cfg.type == 'Pretrained'
    if arch not in ('r50', 'mobilenetv2'):
        assert backbone.init_cfg.checkpoint.startswith(
            f'checkpoints/{name.split("/")[0]}/')
    if 'odconv' in arch:
        assert backbone.kernel_num == int(arch[-2])


@pytest.mark.parametrize('name', TWO_STAGE_PARAMS)
def test_config_builds_and_its_backbone_feeds_the_fpn(name):
    init_default_scope('mmdet')
    cfg = load(name)
    for split in ('train', 'test'):
        pipeline = cfg[f'{split}_dataloader'].dataset.pipeline
        assert [TRANSFORMS.build(t) for t in pipeline]
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = model.backbone(torch.rand(1, 3, 64, 96))
        assert [f.shape[1] for f in feats] == cfg.model.neck.in_channels
        assert [tuple(f.shape[2:]) for f in feats] == [(16, 24), (8, 12),
                                                       (4, 6), (2, 3)]
        outs = model.neck(feats)
    assert len(outs) == 5 and all(o.shape[1] == 256 for o in outs)
    assert model.roi_head.with_mask == osp.basename(name).startswith('mask')


@pytest.mark.slow
def test_missing_pretrained_file_stops_training_at_once(tmp_path):
    name = osp.join(REPO, 'configs', 'odconv',
                    'faster-rcnn_r50-odconv-4x_fpn_1x_coco.py')
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), name,
         '--work-dir', str(tmp_path / 'work')],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 1
    message = result.stderr
    assert 'checkpoints/odconv/od_resnet50_4x.pth.tar' in message
    assert str(tmp_path / 'checkpoints' / 'odconv') in message
    assert 'drive.google.com' in message
    assert 'model.backbone.init_cfg.checkpoint=torchvision://resnet50' in \
        message
    assert not (tmp_path / 'work').exists()  # nothing was started


@pytest.mark.parametrize('name,static', [
    ('dyconv/mask-rcnn_mobilenetv2-dyconv-4x_fpn_1x_coco.py',
     'open-mmlab://mmdet/mobilenet_v2'),
    ('dcd/faster-rcnn_r50-dcd_fpn_1x_coco.py', 'torchvision://resnet50'),
])
def test_missing_pretrained_file_message_from_init_weights(name, static,
                                                           tmp_path,
                                                           monkeypatch):
    """Users of MMDetection's own tools/train.py get the same message when
    the weights are initialised."""
    init_default_scope('mmdet')
    monkeypatch.chdir(tmp_path)
    cfg = load(name)
    backbone = MODELS.build(cfg.model.backbone)
    with pytest.raises(FileNotFoundError) as error:
        backbone.init_weights()
    message = str(error.value)
    assert cfg.model.backbone.init_cfg.checkpoint in message
    assert f'init_cfg.checkpoint={static}' in message
    assert 'init_cfg=None' in message
    if 'dyconv' in name:
        assert 'none was released' in message
    else:
        assert 'resnet50_dcd.pth.tar' in message and 'liyunsheng13/dcd' in \
            message


def test_check_pretrained_files_only_stops_on_missing_local_files(tmp_path):
    from mmdyn.checkpoint import check_pretrained_files
    present = tmp_path / 'weights.pth'
    present.write_bytes(b'')

    def cfg(checkpoint, **backbone):
        return Config(dict(model=dict(backbone=dict(
            type='ODMobileNetV2', init_cfg=[
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Pretrained', checkpoint=checkpoint)
            ], **backbone))))

    check_pretrained_files(cfg('torchvision://mobilenet_v2'))
    check_pretrained_files(cfg(str(present)))
    check_pretrained_files(Config(dict(model=dict(type='RetinaNet'))))
    with pytest.raises(FileNotFoundError) as error:
        check_pretrained_files(cfg(str(tmp_path / 'mine.pth'),
                                   widen_factor=0.5))
    message = str(error.value)
    assert str(tmp_path / 'mine.pth') in message
    # no static MobileNetV2 0.5x to fetch: say what to do without one
    assert '://' not in message and 'set model.backbone.init_cfg' \
        '.checkpoint to its path' in message


@pytest.mark.slow
def test_demo_backbone_init_cfg_takes_a_checkpoint_on_the_command_line(
        tmp_path):
    """The demo starts from scratch with MMDetection's default init, as with
    init_cfg=None, and still takes --cfg-options
    model.backbone.init_cfg.checkpoint=FILE as the COCO configs do."""
    demo = osp.join(REPO, 'configs', 'demo',
                    'faster-rcnn_r18-odconv-4x_fpn_demo-shapes.py')
    cfg = Config.fromfile(demo)
    init_default_scope('mmdet')
    built = []
    for init_cfg in (cfg.model.backbone.init_cfg, None):
        torch.manual_seed(0)
        backbone = MODELS.build(dict(cfg.model.backbone, init_cfg=init_cfg))
        backbone.init_weights()
        built.append(backbone.state_dict())
    assert all(torch.equal(built[0][k], built[1][k]) for k in built[0])
    path = tmp_path / 'r18.pth'
    torch.manual_seed(1)
    source = MODELS.build(dict(cfg.model.backbone, init_cfg=None))
    torch.save({'state_dict': source.state_dict()}, path)
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': str(path)})
    backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


ONE_STAGE_BASES = {
    'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'fcos': 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
}
PYTORCH_NORMALISATION = dict(mean=[123.675, 116.28, 103.53],
                             std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


# the quick subset (-m "not slow") checks one R50 and one MobileNetV2
# config of each detector; the rest are marked slow
QUICK_ONE_STAGE = {'odconv/retinanet_r50-odconv-1x_fpn_1x_coco.py',
                   'dcd/fcos_mobilenetv2-dcd_fpn_gn-head_1x_coco.py'}


@pytest.mark.parametrize('name', [
    n if n in QUICK_ONE_STAGE else pytest.param(n, marks=pytest.mark.slow)
    for n in ONE_STAGE])
def test_one_stage_config_is_mmdets_with_the_backbone_changed(name):
    cfg = load(name)
    detector = osp.basename(name).split('_')[0]
    base = get_config(ONE_STAGE_BASES[detector])
    ours, theirs = without_scope(cfg.to_dict()), base.to_dict()
    for d in (ours, theirs):
        for key in ('custom_imports', 'backbone', 'neck_in_channels'):
            d.pop(key, None)
        d['model'].pop('backbone')
        d['model']['neck'].pop('in_channels')
        if detector == 'fcos':  # Caffe-style normalisation in mmdet's
            for key in PYTORCH_NORMALISATION:
                d['model']['data_preprocessor'].pop(key)
    assert ours == theirs
    if detector == 'fcos':
        for key, value in PYTORCH_NORMALISATION.items():
            assert cfg.model.data_preprocessor[key] == value
    arch = backbone_name(name)
    backbone = cfg.model.backbone
    assert backbone.type == BACKBONE_TYPES[arch]
    assert cfg.model.neck.in_channels == FPN_IN[arch.split('-')[0]]
    assert backbone.norm_eval is True
    assert backbone.get('style', 'pytorch') == 'pytorch'
    assert backbone.norm_cfg.requires_grad is True
    # the same backbone as the Table 4 config of that row
    two_stage = load(osp.join(name.split('/')[0],
                              f'faster-rcnn_{arch}_fpn_1x_coco.py'))
    assert without_scope(backbone.to_dict()) == without_scope(
        two_stage.model.backbone.to_dict())


@pytest.mark.slow
@pytest.mark.parametrize('name', ONE_STAGE)
def test_one_stage_config_builds_and_predicts(name):
    init_default_scope('mmdet')
    cfg = load(name)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 96), mode='tensor')
    assert len(outs[0]) == 5  # one per FPN level


def _one_image_batch():
    """A data batch of one 96 x 128 image with one box, as a dataloader
    gives it to ``train_step`` / ``test_step``."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    sample = DetDataSample(metainfo=dict(img_shape=(96, 128),
                                         ori_shape=(96, 128),
                                         scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 10., 60., 50.]]),
        labels=torch.tensor([3]))
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    return dict(inputs=[image], data_samples=[sample])


@pytest.mark.slow
@pytest.mark.parametrize('name', ONE_STAGE)
def test_one_stage_trains_two_iterations_at_one_image_per_gpu(name):
    """Two optimizer steps of the config's own optimizer at one image per
    GPU, then a prediction: the attention BatchNorms are in eval mode with
    norm_eval=True, so there is no 'Expected more than 1 value per
    channel', and the losses stay finite."""
    from mmengine.optim import build_optim_wrapper
    init_default_scope('mmdet')
    cfg = load(name)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()  # as the Runner does: the heads' prior biases
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    for _ in range(2):
        losses = model.train_step(_one_image_batch(), optim_wrapper)
        assert all(torch.isfinite(v) for v in losses.values()), losses
    model.eval()
    with torch.no_grad():
        results = model.test_step(_one_image_batch())
    assert len(results) == 1 and 'pred_instances' in results[0]
