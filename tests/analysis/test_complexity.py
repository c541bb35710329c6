"""MAdd counting that includes the attention branches of dynamic convs, and
the Table-4 complexity tool."""
import json
import os.path as osp
import sys

import pytest
import torch
from mmengine.analysis import FlopAnalyzer

from mmdyn.analysis import count_flops
from mmdyn.analysis.complexity import DYNAMIC_CONV_FLOP_HANDLES
from mmdyn.layers import CondConv2d, DCDConv2d, DyConv2d, ODConv2d

from conftest import REPO
sys.path.insert(0, osp.join(REPO, 'tools', 'analysis_tools'))
import complexity_table  # noqa: E402

IN, OUT, H, W = 16, 32, 8, 8
PIXELS = H * W


def madds(layer, shape=(1, IN, H, W)):
    return count_flops(layer.eval(), (torch.rand(*shape), )).total()


def test_odconv_count_is_its_whole_computation():
    """ODConv (Eq. 2), 3x3, 4 kernels, attention width 16, written out."""
    k2, kernels, width = 9, 4, 16
    expected = (
        IN * PIXELS  # global average pool
        + IN * width + 2 * width  # fc, BatchNorm (eval: scale and shift)
        + width * (IN + OUT + k2 + kernels)  # the four heads
        + IN * PIXELS  # input-channel attention scales x
        + kernels * OUT * IN * k2  # kernel attention mixes the kernels
        + OUT * IN * k2  # spatial attention scales the kernel
        + OUT * IN * k2 * PIXELS  # the convolution
        + OUT * PIXELS)  # filter attention scales the output
    assert madds(ODConv2d(IN, OUT, 3, padding=1, kernel_num=kernels)) == \
        expected


def test_odconv_1x1_single_kernel_count():
    width = 16
    expected = (IN * PIXELS + IN * width + 2 * width + width * (IN + OUT) +
                IN * PIXELS + OUT * IN * PIXELS + OUT * PIXELS)
    assert madds(ODConv2d(IN, OUT, 1)) == expected


def test_condconv_count_includes_routing_and_kernel_mixing():
    kernels = 8
    expected = (IN * PIXELS + IN * kernels  # pool, routing fc
                + kernels * OUT * IN * 9  # mixing the experts
                + OUT * IN * 9 * PIXELS)
    assert madds(CondConv2d(IN, OUT, 3, padding=1, kernel_num=kernels)) == \
        expected


def test_dynamic_layers_cost_more_than_their_convolution(monkeypatch):
    """MMEngine's own handles miss the element-wise attention products;
    mmdyn's count them (and join MMEngine's table once mmdyn is imported),
    and they are what distinguishes ODConv 1x from a static conv."""
    from mmengine.analysis import complexity_analysis
    table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    monkeypatch.setattr(complexity_analysis, '_DEFAULT_SUPPORTED_FLOP_OPS',
                        {op: handle for op, handle in table.items()
                         if op not in DYNAMIC_CONV_FLOP_HANDLES})
    static = OUT * IN * 9 * PIXELS
    x = torch.rand(1, IN, H, W)
    for layer in (ODConv2d(IN, OUT, 3, padding=1), DCDConv2d(
            IN, OUT, 3, padding=1), DyConv2d(IN, OUT, 3, padding=1),
                  CondConv2d(IN, OUT, 3, padding=1)):
        ours = madds(layer)
        default = FlopAnalyzer(layer.eval(), (x, ))
        default.unsupported_ops_warnings(False)
        assert ours > default.total() >= static, type(layer).__name__
    # DCD: static conv, gate Λ(x) on its output, and the rank-L residual
    dcd = count_flops(DCDConv2d(IN, OUT, 3, padding=1).eval(),
                      (x, )).by_operator()
    assert dcd['bmm'] > 0 and dcd['mul'] >= OUT * PIXELS


@pytest.mark.slow
def test_complexity_table_tool(tmp_path, capsys):
    configs = [
        osp.join(REPO, 'configs', 'odconv',
                 'mask-rcnn_mobilenetv2-odconv-4x_fpn_1x_coco.py'),
        osp.join(REPO, 'configs', 'baseline',
                 'faster-rcnn_mobilenetv2_fpn_1x_coco.py'),
    ]
    out = tmp_path / 'table.json'
    complexity_table.main([*configs, '--shape', '128', '96', '--out',
                           str(out), '--markdown'])
    printed = capsys.readouterr().out
    assert '| odconv/mask-rcnn_mobilenetv2-odconv-4x_fpn_1x_coco.py | ' in \
        printed
    rows = json.loads(out.read_text())['rows']
    od, base = rows
    # backbone params are Table 4's, and ODConv 4x adds 8.0M of them
    assert od['backbone_params_m'] == pytest.approx(10.24, abs=0.01)
    assert base['backbone_params_m'] == pytest.approx(2.22, abs=0.01)
    assert od['paper'] == dict(params_m=31.80, backbone_params_m=10.24,
                               madds_g=176.10, backbone_madds_g=24.89)
    assert od['backbone_madds_g'] > base['backbone_madds_g'] > 0
    assert od['madds_g'] > od['backbone_madds_g']
    # never overwrites
    with pytest.raises(SystemExit, match='exists'):
        complexity_table.main([configs[1], '--out', str(out)])
    with pytest.raises(SystemExit, match='not found'):
        complexity_table.main([str(tmp_path / 'nope.py')])


def test_paper_rows_cover_the_24_configs():
    configs = complexity_table.table_4_configs()
    assert len(configs) == 24
    assert all(complexity_table.paper_row(c) for c in configs)
    assert complexity_table.paper_row('configs/demo/x_fpn_demo.py') is None


def test_count_does_not_depend_on_grad_mode():
    """Activations that need a gradient pool as a sum and a scaling, not a
    mean; the count is that of inference either way."""
    layer = ODConv2d(IN, OUT, 3, padding=1, kernel_num=4).eval()
    x = torch.rand(1, IN, H, W)
    counts = [count_flops(layer, (inp, )).total()
              for inp in (x, x.clone().requires_grad_())]
    with torch.no_grad():
        counts.append(count_flops(layer, (x, )).total())
    # MMEngine's own counter (MMDetection's get_flops.py) traces with
    # gradients enabled and parameters that need them
    from mmengine.analysis import get_model_complexity_info
    for inp in (x, x.clone().requires_grad_()):
        counts.append(get_model_complexity_info(
            layer, inputs=(inp, ), show_table=False,
            show_arch=False)['flops'])
    assert len(set(counts)) == 1, counts


@pytest.mark.slow
@pytest.mark.parametrize('name', [
    'r18-odconv-4x', 'r50-odconv-1x', 'r50-dcd', 'r50-dyconv', 'r50-condconv',
    'r50-static', 'mbv2-odconv-4x', 'mbv2-dcd', 'mbv2-dyconv',
    'mbv2-condconv', 'mbv2-static'
])
def test_mmengines_counter_counts_what_mmdyns_counts(name, monkeypatch):
    """mmengine.analysis.get_model_complexity_info (MMDetection's
    get_flops.py) gives mmdyn's count, attention branches included."""
    from mmengine.analysis import get_model_complexity_info
    from deploy_cases import calibrated
    model = calibrated(name, torch.float32)
    x = torch.randn(1, 3, 64, 96)
    ours = count_flops(model, (x, )).total()
    with torch.no_grad():
        theirs = get_model_complexity_info(model, inputs=(x, ),
                                           show_table=False,
                                           show_arch=False)['flops']
    assert theirs == ours
    if 'static' not in name:  # what MMEngine alone would leave out
        from mmengine.analysis import complexity_analysis
        table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
        monkeypatch.setattr(complexity_analysis,
                            '_DEFAULT_SUPPORTED_FLOP_OPS',
                            {op: handle for op, handle in table.items()
                             if op not in DYNAMIC_CONV_FLOP_HANDLES})
        with torch.no_grad():
            assert FlopAnalyzer(model, (x, )).total() < ours
