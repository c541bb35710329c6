"""The benchmark module (mmdyn/analysis/benchmark.py) end to end on small
sizes on the CPU: models built from configs, MMEngine's training step with
the config's optimizer wrapper, variants as config overrides, steps in
turns. The numbers it reports come from the GPU machine (docs/speed.md)."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from mmdyn.analysis import benchmark

DEMO = osp.join(REPO, 'configs', 'demo',
                'faster-rcnn_r18-odconv-4x_fpn_demo-shapes.py')
QUICK = ['--shape', '64', '64', '--warmup', '0', '--reps', '2',
         '--device', 'cpu']


@pytest.mark.slow
def test_detectors_end_to_end(tmp_path):
    out = tmp_path / 'result.json'
    rows = benchmark.main([
        'detector', '--model', DEMO, '--model', DEMO,
        'model.backbone.norm_eval=True', 'model.backbone.kernel_num=1',
        *QUICK, '--batch-size', '2', '--out', str(out)
    ])
    assert [r['label'] for r in rows] == [
        'faster-rcnn_r18-odconv-4x_fpn_demo-shapes',
        'faster-rcnn_r18-odconv-4x_fpn_demo-shapes '
        'model.backbone.norm_eval=True model.backbone.kernel_num=1'
    ]
    assert rows[0]['train_ratio'] == rows[0]['test_ratio'] == 1.0
    for row in rows:
        assert row['losses_finite']
        for what in ('train', 'test'):
            times = row[what]
            assert times['n'] == 2 and 0 < times['min_ms'] <= \
                times['q1_ms'] <= times['median_ms'] <= times['q3_ms']
    saved = json.loads(out.read_text())
    assert saved['rows'][1]['overrides'] == [
        'model.backbone.norm_eval=True', 'model.backbone.kernel_num=1']
    assert saved['environment']['device'] == 'cpu'
    assert 'benchmark.py detector --model' in saved['command']
    with pytest.raises(SystemExit):  # an existing --out is never replaced
        benchmark.main(['detector', '--model', DEMO, *QUICK, '--out',
                        str(out)])


@pytest.mark.slow
def test_steps_are_mmengines_after_train_and_eval():
    """The training step is the model's train_step with the config's
    optimizer wrapper, after model.train() (norm_eval applies), at the
    warm-up's learning rate; inference is test_step after eval()."""
    cfg = benchmark.load_config(
        DEMO, {'model.backbone.norm_eval': True})
    steps = benchmark.DetectorSteps(cfg, torch.device('cpu'), 2, (64, 64))
    calls = []
    for name in ('train_step', 'test_step', 'train'):
        method = getattr(steps.model, name)

        def spy(*args, _name=name, _method=method, **kwargs):
            calls.append(_name)
            return _method(*args, **kwargs)

        setattr(steps.model, name, spy)
    norms = [m for m in steps.model.backbone.modules()
             if isinstance(m, torch.nn.BatchNorm2d)]
    start_lr = steps.optim_wrapper.get_lr()['lr'][0]
    warmup = cfg.param_scheduler[0]
    assert warmup.type == 'LinearLR' and not warmup.by_epoch
    assert start_lr == pytest.approx(cfg.optim_wrapper.optimizer.lr *
                                     warmup.start_factor)
    steps.train_step()
    assert not any(n.training for n in norms)  # train() applied norm_eval
    steps.train_step()
    steps.test_step()
    steps.train_step()
    assert calls == ['train', 'train_step', 'train_step', 'train',
                     'test_step', 'train', 'train_step']
    assert steps.optim_wrapper.get_lr()['lr'][0] > start_lr
    assert len(steps.losses) == 3 and steps.losses_finite()


def test_models_are_timed_in_turns(monkeypatch):
    """A host that speeds up or slows down during the run does so for every
    model alike: each round calls each model once."""
    calls = []
    timed = benchmark.time_once_ms

    def recording(fn, device):
        calls.append(fn)
        return timed(fn, device)

    monkeypatch.setattr(benchmark, 'time_once_ms', recording)
    fns = [lambda: None, lambda: None]
    results = benchmark.time_in_turns(fns, torch.device('cpu'), warmup=1,
                                      reps=3)
    assert calls == fns * 3 and len(results) == 2


def test_summarize_gives_median_and_quartiles():
    times = benchmark.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert times == dict(median_ms=3.0, q1_ms=2.0, q3_ms=4.0, min_ms=1.0,
                         max_ms=5.0, n=5)
    assert benchmark.summarize([2.0])['q3_ms'] == 2.0


def test_variants_are_config_overrides():
    cfg = benchmark.load_config(
        osp.join(REPO, 'configs', 'odconv',
                 'faster-rcnn_r50-odconv-1x_fpn_1x_coco.py'),
        benchmark.parse_overrides(['model.backbone.cuda_graph=True',
                                   'model.backbone.out_indices=[0,1]']))
    assert cfg.model.backbone.cuda_graph is True
    assert cfg.model.backbone.out_indices == [0, 1]
    # the authors' ImageNet file is not needed to time the model
    assert cfg.model.backbone.init_cfg is None
    with pytest.raises(ValueError, match='KEY=VALUE'):
        benchmark.parse_overrides(['model.backbone.cuda_graph'])


def test_backbones(tmp_path):
    # a static backbone of MMDetection's too, whose train() returns None
    static = osp.join(REPO, 'configs', 'baseline',
                      'faster-rcnn_mobilenetv2_fpn_1x_coco.py')
    rows = benchmark.main([
        'backbone', '--model', DEMO, '--model', DEMO,
        'model.backbone.kernel_num=1', '--model', static, '--batch-size',
        '2', '--channels-last', *QUICK
    ])
    assert rows[0]['throughput_ratio'] == 1.0
    assert len(rows) == 3 and all(r['images_per_s'] > 0 for r in rows)


@pytest.mark.parametrize('argv,message', [
    (['backbone', '--model', DEMO, '--amp'], '--amp: detectors only'),
    (['detector', '--model', DEMO, '--dtype', 'bfloat16'],
     'backbones only'),
    (['detector'], '--model'),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_tool_and_the_module_run_by_path():
    """tools/analysis_tools/benchmark.py is the module's command line; the
    module itself also runs by its path (how an older checkout of mmdyn is
    timed with it)."""
    for script in (osp.join(REPO, 'tools', 'analysis_tools', 'benchmark.py'),
                   osp.join(REPO, 'mmdyn', 'analysis', 'benchmark.py')):
        result = subprocess.run([sys.executable, script, '--help'],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert '--model CONFIG' in result.stdout


@pytest.mark.gpu
def test_gpu_graphed_memory_counts_what_the_graphs_hold():
    """A replay allocates nothing: the activations live in the graphs' pool,
    reserved at capture. The reported memory adds the pool and the static
    buffers, so it compares with the eager step's peak."""
    from mmdyn.runtime import enable_cuda_graph
    device = torch.device('cuda')
    model = torch.nn.Module()
    model.backbone = torch.nn.Sequential(
        *[torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(6)]).cuda()
    x = torch.randn(8, 32, 128, 128, device=device)

    def step():
        model.backbone(x).sum().backward()
        model.backbone.zero_grad(set_to_none=True)

    assert benchmark._graph_memory_bytes(model) == 0
    eager = benchmark.peak_memory_mib(step, device)
    enable_cuda_graph(model.backbone)
    for _ in range(4):  # warm-up runs, then the capture
        step()
    held = benchmark._graph_memory_bytes(model)
    alone = benchmark.peak_memory_mib(step, device)
    graphed = benchmark.peak_memory_mib(step, device, held)
    assert alone < 0.5 * eager  # without the pool, most of it is missing
    assert graphed == pytest.approx(alone + held / 2**20)
    assert graphed > 0.9 * eager
