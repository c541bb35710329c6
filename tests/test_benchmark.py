"""The benchmark script runs every mode end to end (tiny sizes, CPU); the
numbers it reports come from the GPU machine, not from here."""
import json
import os.path as osp
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import benchmark  # noqa: E402

QUICK = ['--reps', '1', '--warmup', '0', '--families', 'mobilenetv2']


def run(tmp_path, *argv):
    out = tmp_path / 'result.json'
    benchmark.main([*argv, *QUICK, '--out', str(out)])
    return json.loads(out.read_text())


def test_layers(tmp_path, capsys):
    result = run(tmp_path, 'layers', '--shape', '32', '32', '--batch', '1',
                 '--methods', 'odconv-4x', 'dcd')
    rows = result['rows']
    # MobileNetV2's convs but the stem, each with its count
    assert sum(r['count'] for r in rows) == 51
    assert all(r['static']['fwd_ms'] > 0 and r['odconv-4x']['fwd_bwd_ms'] > 0
               for r in rows)
    assert set(result['totals']['mobilenetv2']) == {'static', 'odconv-4x',
                                                    'dcd'}
    assert '| odconv-4x |' in capsys.readouterr().out


def test_backbones(tmp_path):
    result = run(tmp_path, 'backbones', '--shape', '32', '32', '--batch',
                 '2', '--methods', 'odconv-1x')
    static, dynamic = result['rows']
    assert static['ratio'] == 1.0 and dynamic['method'] == 'odconv-1x'
    assert dynamic['images_per_s'] > 0
    assert 'backbones --shape 32 32' in result['command']
    assert result['per_sample'] == 'grouped' and not result['channels_last']
    assert result['triton'] == 'auto'


def test_backbones_are_timed_in_turns(tmp_path, monkeypatch):
    """A host that speeds up or slows down during the run does so for every
    backbone alike: after the warmup, each round calls each model once."""
    calls = []
    measure = benchmark.measure_ms

    def recording(fn, device, warmup, reps):
        calls.append(fn)
        return measure(fn, device, warmup, reps)

    monkeypatch.setattr(benchmark, 'measure_ms', recording)
    benchmark.main(['backbones', '--shape', '32', '32', '--batch', '1',
                    '--methods', 'odconv-1x', *QUICK, '--reps', '3'])
    assert len(calls) == 6 and calls[0] is not calls[1]
    assert calls[0::2] == [calls[0]] * 3 and calls[1::2] == [calls[1]] * 3


def test_speed_settings(tmp_path):
    from mmdyn.layers import DynamicConv2d
    try:
        result = run(tmp_path, 'backbones', '--shape', '32', '32',
                     '--batch', '2', '--methods', 'condconv-8x',
                     '--per-sample', 'loop', '--channels-last', '--triton',
                     'off')
        assert DynamicConv2d.per_sample_conv == 'loop'
        assert DynamicConv2d.triton_kernels is False
    finally:
        DynamicConv2d.per_sample_conv = 'grouped'
        DynamicConv2d.triton_kernels = None
    assert result['per_sample'] == 'loop' and result['channels_last']
    assert result['triton'] == 'off'
    with pytest.raises(SystemExit):
        benchmark.parse_args(['layers', '--compile'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['backbones', '--triton', 'both'])


def test_speed_modes_keep_the_eager_reference(tmp_path, capsys):
    with pytest.warns(UserWarning, match='not on a CUDA device'):
        result = run(tmp_path, 'detectors', '--shape', '64', '96',
                     '--methods', 'odconv-1x', '--cuda-graph',
                     '--param-grads', 'direct')
    assert [(r['method'], r['mode']) for r in result['rows']] == [
        ('static', 'eager'), ('static', 'cuda-graph'),
        ('odconv-1x', 'cuda-graph')]
    assert result['rows'][0]['train_ratio'] == 1.0 and result['cuda_graph']
    assert result['param_grads'] == 'direct'
    # also against the static model in the same mode
    eager, static, dynamic = result['rows']
    assert 'mode_ratios' not in eager
    assert static['mode_ratios'] == dict(train=1.0, infer=1.0)
    assert dynamic['mode_ratios']['train'] == pytest.approx(
        dynamic['train_ms'] / static['train_ms'])
    out = capsys.readouterr().out
    assert '| odconv-1x (cuda-graph) | fp32 |' in out
    assert '| 1.00x / 1.00x |' in out
    with pytest.raises(SystemExit):
        benchmark.parse_args(['detectors', '--compile', '--cuda-graph'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['layers', '--cuda-graph'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['detectors', '--param-grads', 'direct'])
    args = benchmark.parse_args(
        ['detectors', '--cuda-graph', '--param-grads', 'direct'])
    from torch import nn

    from mmdyn.models import get_cuda_graph
    conv = benchmark.speed_mode(nn.Conv2d(3, 3, 1), args, 'cuda-graph')
    assert get_cuda_graph(conv).param_grads == 'direct'


def recorded_builds(monkeypatch) -> list:
    """The list that the detectors the benchmark builds will be put in."""
    built = []
    build = benchmark.build_detectors

    def recording(args, device):
        built.extend(build(args, device))
        return built

    monkeypatch.setattr(benchmark, 'build_detectors', recording)
    return built


def test_triton_both_measures_fused_methods_both_ways(tmp_path, capsys,
                                                      monkeypatch):
    from mmdyn.layers import DynamicConv2d
    built = recorded_builds(monkeypatch)
    result = run(tmp_path, 'detectors', '--shape', '64', '96', '--methods',
                 'condconv-8x', 'dcd', '--triton', 'both', '--reps', '1')
    assert [(r['method'], r['triton']) for r in result['rows']] == [
        ('static', 'auto'), ('condconv-8x', 'auto'), ('dcd', 'auto'),
        ('dcd', 'off')]
    assert '| dcd, no Triton | fp32 |' in capsys.readouterr().out
    layers = [[m for m in entry['model'].modules()
               if isinstance(m, DynamicConv2d)] for entry in built[2:]]
    assert all(m.triton_kernels is None for m in layers[0])
    assert layers[1] and all(m.triton_kernels is False for m in layers[1])


def test_without_measures_a_copy_with_the_speed_up_off(
        tmp_path, capsys, monkeypatch):
    from mmdyn.layers import DCDConv2d, DynamicConv2d
    built = recorded_builds(monkeypatch)
    result = run(tmp_path, 'detectors', '--shape', '64', '96', '--methods',
                 'condconv-8x', 'odconv-1x', 'dcd', '--without',
                 'bias-split', 'relu-sums', '--reps', '1')
    assert [(r['method'], r['without']) for r in result['rows']] == [
        ('static', None), ('condconv-8x', None), ('odconv-1x', None),
        ('odconv-1x', 'relu-sums'), ('dcd', None), ('dcd', 'bias-split'),
        ('dcd', 'relu-sums')]
    assert '| dcd, without bias-split | fp32 |' in capsys.readouterr().out

    def layers(entry, kind=DynamicConv2d):
        found = [m for m in entry['model'].modules() if isinstance(m, kind)]
        assert found
        return found

    for entry in built[1:]:
        off = {vars(m).get('takes_input_sum') is benchmark._takes_no_input_sum
               for m in layers(entry)}
        assert off == {entry['without'] == 'relu-sums'}
    for entry in built[4:]:
        split = {m.forward_split_bias is None
                 for m in layers(entry, DCDConv2d)}
        assert split == {entry['without'] == 'bias-split'}
    with pytest.raises(SystemExit):
        benchmark.parse_args(['backbones', '--without', 'bias-split'])
    for flag in ('--profile', '--phases'):
        with pytest.raises(SystemExit):
            benchmark.parse_args(['layers', flag, '2'])
    with pytest.raises(SystemExit):
        benchmark.parse_args(['detectors', '--without', 'relu-sums',
                              '--triton', 'off'])


def test_detectors(tmp_path, capsys):
    result = run(tmp_path, 'detectors', '--shape', '64', '96', '--methods',
                 'odconv-4x', '--profile', '5', '--phases', '2')
    assert [r['method'] for r in result['rows']] == ['static', 'odconv-4x']
    assert all(r['all_losses_finite'] and r['train_ms'] > 0
               for r in result['rows'])
    static, dynamic = (r['profile'] for r in result['rows'])
    assert len(dynamic['top']) == 5 and dynamic['top'][0]['ms'] > 0
    assert dynamic['kernels'] > static['kernels'] > 0
    for row in result['rows']:
        assert list(row['phases_ms']) == list(benchmark.PHASES)
        assert all(t >= 0 for t in row['phases_ms'].values())
        assert row['phases_ms']['forward'] > 0
    out = capsys.readouterr().out
    assert 'faster-rcnn: training step' in out
    assert 'profile, training step: mobilenetv2 odconv-4x' in out
    assert '| mobilenetv2 | odconv-4x | fp32 | ' in out.split(
        'training step by phase')[1]
    with pytest.raises(SystemExit, match='exists'):
        benchmark.main(['backbones', '--out', str(tmp_path / 'result.json')])


def test_profile_counts_each_kernel_once():
    """On a GPU an operator's self device time is that of the kernels it
    launched, which are entries of their own: the total adds the kernels
    only (summing both counted every kernel twice)."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device_type, device_us, cpu_us, count=1):
        return SimpleNamespace(key=key, device_type=device_type,
                               self_device_time_total=device_us,
                               self_cpu_time_total=cpu_us, count=count)

    events = [event('_ReplayBackward', DeviceType.CPU, 3000, 50),
              event('aten::add_', DeviceType.CPU, 1000, 20, 2),
              event('graph_kernel', DeviceType.CUDA, 3000, 0, 40),
              event('add_kernel', DeviceType.CUDA, 1000, 0, 2),
              event('aten::empty', DeviceType.CPU, 0, 5)]
    gpu = benchmark.summarise_profile(events, cuda=True, top=3)
    assert gpu['kernels'] == 42 and gpu['total_ms'] == 4.0
    assert [(t['name'], t['kind']) for t in gpu['top']] == [
        ('_ReplayBackward', 'operator'), ('graph_kernel', 'kernel'),
        ('aten::add_', 'operator')]
    cpu = benchmark.summarise_profile(events, cuda=False, top=2)
    assert cpu['kernels'] == 4 and cpu['total_ms'] == 0.075
    assert [t['name'] for t in cpu['top']] == ['_ReplayBackward',
                                               'aten::add_']


def test_detector_steps_set_the_mode_where_it_changes():
    """As MMEngine's epoch-based and validation loops: train() / eval()
    once per switch, not every step (a dynamic detector's takes ms)."""
    from collections import Counter

    import torch
    from torch import nn

    class Counting(nn.Module):

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))
            self.calls = Counter()

        def train(self, mode=True):
            self.calls['train' if mode else 'eval'] += 1
            return super().train(mode)

        def forward(self, inputs, mode):
            return dict(loss=(self.weight * inputs).sum()) \
                if mode == 'loss' else [inputs]

        def parse_losses(self, losses):
            return losses['loss'], {}

    model = Counting()
    x = torch.ones(2)
    steps = benchmark.DetectorSteps(
        dict(model=model, data=dict(inputs=x), single=dict(inputs=x),
             initial=model.state_dict()), 'fp32', torch.device('cpu'))
    # train() before the first step, as MMEngine's loop: it applies
    # norm_eval, which a model built in training mode has not had
    assert model.calls == {'train': 1}
    for step in [steps.train_step] * 3 + [steps.infer] * 3 + [
            steps.train_step] * 2:
        step()
    assert model.calls == {'eval': 1, 'train': 2}
    assert model.training and steps.finite == [True] * 5
