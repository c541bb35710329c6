"""A detector checkpoint that does not fit the config's model stops every
path that loads one (tools/test.py, load_from through tools/train.py,
--resume, and a Runner of MMDetection's own tools) before any evaluation or
training step, with a message that names the mismatch and the fix;
partial_load=True opts out and logs what was left unloaded."""
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmdyn  # noqa: F401  (the checked Runner.load_checkpoint)
from conftest import REPO
from mmdyn.analysis.benchmark import parse_overrides
from mmdyn.checkpoint import CheckpointMismatchError
from mmdyn.checkpoint.strict import compare
from demo import FASTER, QUICK, run_tool


def _overrides(*extra):
    return [*QUICK, *extra]


def _demo_checkpoint(path, static=False):
    """A checkpoint of the demo Faster R-CNN (ODConv 4x ResNet-18, or with
    ``static`` a static ResNet-18), saved as MMEngine saves one."""
    cfg = Config.fromfile(FASTER)
    if static:
        cfg.model.backbone = dict(type='DynamicResNet', depth=18,
                                  out_indices=(0, 1, 2, 3))
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(),
                'meta': {'iter': 2, 'epoch': 0}}, path)
    return str(path)


def test_a_fitting_checkpoint_has_no_problems():
    init_default_scope('mmdet')
    model = MODELS.build(Config.fromfile(FASTER).model)
    assert compare(model, model.state_dict()) == ([], [], [])
    partial = dict(model.state_dict())
    partial.pop(next(k for k in partial if k.endswith('num_batches_tracked')))
    assert compare(model, partial) == ([], [], [])  # counters not required


@pytest.mark.parametrize('wrapper',
                         ['DetTTAModel', 'MMDistributedDataParallel'])
def test_wrapped_models_are_checked_inside(wrapper, tmp_path):
    """tools/test.py --tta wraps the detector in a DetTTAModel; DDP in
    MMDistributedDataParallel: the checkpoint fits the module inside, as
    MMEngine's load_state_dict unwraps it."""
    from mmdyn.checkpoint.strict import check_detector_checkpoint
    init_default_scope('mmdet')
    cfg = Config.fromfile(FASTER)
    detector = MODELS.build(cfg.model)
    checkpoint = {'state_dict': detector.state_dict()}
    if wrapper == 'DetTTAModel':
        model = MODELS.build(dict(type='DetTTAModel', module=cfg.model))
    else:
        from mmengine.model import MMDistributedDataParallel
        model = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
        torch.nn.Module.__init__(model)
        model.module = detector
    check_detector_checkpoint(model, checkpoint, 'f.pth',
                              [(r'^module\.', '')], False, None)
    checkpoint['state_dict'].pop('backbone.conv1.weight')
    with pytest.raises(CheckpointMismatchError, match='backbone.conv1'):
        check_detector_checkpoint(model, checkpoint, 'f.pth',
                                  [(r'^module\.', '')], False, None)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['odconv 4x into 1x', 'static into odconv'])
def test_tools_test_stops_before_evaluating(tmp_path, case):
    if case == 'odconv 4x into 1x':
        checkpoint = _demo_checkpoint(tmp_path / 'c.pth')
        config_args = ['model.backbone.kernel_num=1']
        expected = ['shape mismatches', 'kernel_num=4',
                    "the config's backbone is ODResNet with kernel_num=1"]
    else:
        checkpoint = _demo_checkpoint(tmp_path / 'c.pth', static=True)
        config_args = []
        expected = ['model keys missing from the checkpoint',
                    'a static network']
    result = run_tool('test.py', FASTER, checkpoint, '--work-dir',
                      str(tmp_path / 'work'), '--cfg-options',
                      *_overrides(*config_args), cwd=tmp_path, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert 'CheckpointMismatchError' in output
    for text in expected + ['nothing was loaded', 'partial_load=True']:
        assert text in output, text
    assert 'coco/bbox_mAP' not in output  # no evaluation ran


@pytest.mark.slow
def test_partial_load_opts_out_and_logs_what_is_left(tmp_path):
    checkpoint = _demo_checkpoint(tmp_path / 'c.pth')
    result = run_tool('test.py', FASTER, checkpoint, '--work-dir',
                      str(tmp_path / 'work'), '--partial-load',
                      '--cfg-options',
                      *_overrides('model.backbone.kernel_num=1'),
                      cwd=tmp_path)
    assert 'is loaded in part' in result
    assert 'shape mismatch (kept the model\'s): backbone.layer1.0.conv1' \
        in result
    assert 'coco/bbox_mAP' in result


@pytest.mark.slow
def test_load_from_and_resume_stop_before_training(tmp_path):
    work = tmp_path / 'work'
    run_tool('train.py', FASTER, '--work-dir', str(work), '--cfg-options',
             *_overrides('train_cfg.max_iters=2'), cwd=tmp_path)
    checkpoint = str(work / 'iter_2.pth')
    for how in (['--cfg-options', *_overrides(
            f'load_from={checkpoint}', 'model.backbone.kernel_num=1')],
                ['--resume', checkpoint, '--cfg-options',
                 *_overrides('model.backbone.kernel_num=1')]):
        result = run_tool('train.py', FASTER, '--work-dir',
                          str(tmp_path / 'again'), *how, cwd=tmp_path,
                          check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert 'CheckpointMismatchError' in output and 'kernel_num=4' in \
            output
        # before any step, and before the optimizer's own complaint
        assert 'Iter(train)' not in output
        assert "doesn't match the size of optimizer's group" not in output


@pytest.mark.slow
def test_an_authors_mmdet2_detector_is_told_to_convert(tmp_path):
    """The ODConv authors' MMDetection-2 MobileNetV2 detectors keep the
    backbone in their 'features.N' layout: no key would load."""
    from test_detector_conversion import mmdet2_checkpoint
    from test_checkpoints import official_state_dict
    config = 'odconv/faster-rcnn_mobilenetv2-odconv-4x_fpn_1x_coco.py'
    path = tmp_path / 'authors.pth'
    torch.save(mmdet2_checkpoint(config, official_state_dict(
        'odconv4x_mobilenetv2_100')), path)
    cfg = Config.fromfile(osp.join(REPO, 'configs', config))
    cfg.model.backbone.init_cfg = None
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(CheckpointMismatchError) as info:
        runner.load_checkpoint(str(path))
    message = str(info.value)
    assert "authors' MMDetection-2 detector" in message
    assert 'mmdet2_detector_to_mmdyn.py' in message
    # nothing of the model changed
    before = MODELS.build(cfg.model).state_dict()
    assert before.keys() == runner.model.state_dict().keys()


@pytest.mark.slow
def test_the_runner_of_mmdetections_own_tools_is_checked(
        tmp_path, monkeypatch):
    """MMDetection's tools/train.py builds MMEngine's Runner itself and
    imports mmdyn through custom_imports: its load_checkpoint is the
    checked one."""
    checkpoint = _demo_checkpoint(tmp_path / 'c.pth')
    cfg = Config.fromfile(FASTER)
    cfg.merge_from_dict(parse_overrides(QUICK))
    cfg.model.backbone.kernel_num = 1
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    assert getattr(Runner.load_checkpoint, 'mmdyn_checked', False)
    with pytest.raises(CheckpointMismatchError, match='kernel_num=4'):
        runner.load_checkpoint(checkpoint)
    runner.cfg.partial_load = True
    warned = []
    monkeypatch.setattr(runner.logger, 'warning', warned.append)
    runner.load_checkpoint(checkpoint)
    assert any('loaded in part' in message for message in warned)
