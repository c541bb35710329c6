"""Attention statistics and figures: the layers' attention maps, the
recorder, the summary (DCD's normalised variance included), the plots, and
the tool on a demo detector checkpoint."""
import csv
import json
import os.path as osp
import sys

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmdyn.analysis import (AttentionRecorder, plot_attention_summary,
                            summarize)
from mmdyn.layers import CondConv2d, DCDConv2d, DyConv2d, ODConv2d

from conftest import REPO
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import attention_stats as tool  # noqa: E402

DEMO = osp.join(REPO, 'configs', 'demo',
                'mask-rcnn_r18-odconv-4x_fpn_demo-shapes.py')


@pytest.mark.parametrize('layer,shapes', [
    (ODConv2d(8, 16, 3, padding=1, kernel_num=4),
     dict(channel=(3, 8), filter=(3, 16), spatial=(3, 9), kernel=(3, 4))),
    (ODConv2d(8, 8, 3, padding=1, groups=8),  # depthwise: no filter head
     dict(channel=(3, 8), spatial=(3, 9))),
    (ODConv2d(8, 16, 1), dict(channel=(3, 8), filter=(3, 16))),
    (DCDConv2d(16, 8, 3, padding=1), dict(scale=(3, 8), phi=(3, 4, 4))),
    (DyConv2d(8, 16, 3), dict(kernel=(3, 4))),
    (CondConv2d(8, 16, 3), dict(kernel=(3, 8))),
])
def test_attention_maps_are_what_the_layer_uses(layer, shapes):
    layer.eval()
    x = torch.randn(3, layer.in_channels, 6, 6)
    maps = layer.attention_maps(x)
    assert {k: tuple(v.shape) for k, v in maps.items()} == shapes
    if 'kernel' in maps and not isinstance(layer, CondConv2d):
        assert torch.allclose(maps['kernel'].sum(1), torch.ones(3))
    for name in ('channel', 'filter', 'spatial'):
        if name in maps:
            assert 0 < maps[name].min() and maps[name].max() < 1
    # temperature reaches the maps: a huge one flattens every attention
    layer.temperature = 1e6
    for name, value in layer.attention_maps(x).items():
        if name in ('channel', 'filter', 'spatial'):
            assert torch.allclose(value, torch.full_like(value, 0.5))
        elif name == 'kernel' and isinstance(layer, ODConv2d):
            assert torch.allclose(value, torch.full_like(value, 0.25))


def backbone(cfg):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    model.eval()
    return model


def test_recorder_and_summary_for_dcd(tmp_path):
    model = backbone(dict(type='DCDMobileNetV2', widen_factor=0.5))
    with AttentionRecorder(model) as recorder:
        model(torch.randn(2, 3, 64, 64))
        model(torch.randn(3, 3, 64, 64))
    model(torch.randn(1, 3, 64, 64))  # hooks are gone after the block
    summary = summarize(recorder)
    dynamic = [n for n, m in model.named_modules()
               if type(m).__name__ == 'DCDConv2d']
    assert [e['layer'] for e in summary] == dynamic
    first = summary[0]
    assert first['images'] == 5 and set(first['attentions']) == {'scale',
                                                                 'phi'}
    scale = first['attentions']['scale']
    assert scale['count'] == 5 * first['out_channels']
    assert 0 <= scale['min'] <= scale['q05'] <= scale['q50'] <= scale[
        'q95'] <= scale['max'] <= 2  # DCD's gate has range [0, 2]
    # σΦ: variance over images of each Φ entry, averaged, over the input's
    phi = torch.cat(recorder.records[first['layer']]['phi'])
    expected = phi.flatten(1).var(0).mean() / (
        sum(recorder.input_variance[first['layer']]) / 2)
    assert first['attentions']['phi']['normalized_variance'] == \
        pytest.approx(float(expected), rel=1e-5)
    files = plot_attention_summary(summary, str(tmp_path), 'dcd test')
    assert [osp.basename(f) for f in files] == ['dcd.png']
    assert osp.getsize(files[0]) > 10_000


def test_plots_follow_the_attentions_a_model_has(tmp_path):
    for cfg, expected in [
        (dict(type='DyConvResNet', depth=18), ['kernel.png']),
        (dict(type='ODResNet', depth=18, kernel_num=1),
         ['spatial.png', 'channel_filter.png']),
    ]:
        model = backbone(cfg)
        with AttentionRecorder(model) as recorder:
            model(torch.randn(2, 3, 64, 64))
        out = tmp_path / cfg['type']
        out.mkdir()
        files = plot_attention_summary(summarize(recorder), str(out))
        assert [osp.basename(f) for f in files] == expected


def test_recorder_needs_a_dynamic_model():
    with pytest.raises(ValueError, match='no dynamic convolution'):
        AttentionRecorder(torch.nn.Conv2d(3, 3, 3))


@pytest.mark.slow
def test_tool_on_a_demo_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo dataset goes to ./data/
    options = [
        'demo_dataset.num_train=2', 'demo_dataset.num_val=3',
        'model.test_cfg.rcnn.max_per_img=10'
    ]
    cfg = Config.fromfile(DEMO)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    detector = MODELS.build(cfg.model)
    checkpoint = tmp_path / 'demo.pth'
    torch.save({'state_dict': detector.state_dict(), 'meta': {}}, checkpoint)
    out = tmp_path / 'stats'
    argv = [DEMO, str(checkpoint), '--num-images', '2', '--out', str(out),
            '--device', 'cpu', '--cfg-options', *options]
    tool.main(argv)
    printed = capsys.readouterr().out
    assert '16 dynamic layers, 2 images' in printed
    stats = json.loads((out / 'attention_stats.json').read_text())
    assert stats['images'] == 2 and len(stats['layers']) == 16
    assert set(stats['layers'][0]['attentions']) == {
        'channel', 'filter', 'spatial', 'kernel'
    }
    rows = list(csv.DictReader(open(out / 'attention_stats.csv')))
    assert len(rows) == 16 * 4 and rows[0]['layer'] == \
        'backbone.layer1.0.conv1'
    for name in ('spatial.png', 'kernel.png', 'channel_filter.png'):
        assert (out / name).stat().st_size > 10_000
    # earlier results are not overwritten without --force
    with pytest.raises(SystemExit, match='--force'):
        tool.main(argv)
    tool.main(argv + ['--force'])
    with pytest.raises(SystemExit, match='checkpoint not found'):
        tool.main([DEMO, str(tmp_path / 'missing.pth'), '--out',
                   str(tmp_path / 'other'), '--cfg-options', *options])
