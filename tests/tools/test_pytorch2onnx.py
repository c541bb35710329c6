"""tools/deployment/pytorch2onnx.py on the demo detector: exports the
backbone and neck of a checkpoint, checks them in ONNX Runtime, times them,
and keeps what exists."""
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

from demo import FASTER, run_tool

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')
TOOL = 'deployment/pytorch2onnx.py'


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    init_default_scope('mmdet')
    cfg = Config.fromfile(FASTER)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = tmp_path_factory.mktemp('ckpt') / 'demo.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return str(path)


@pytest.mark.slow
def test_exports_checks_and_times_a_checkpoint(checkpoint, tmp_path):
    out = tmp_path / 'demo.onnx'
    log = run_tool(TOOL, FASTER, '--checkpoint', checkpoint, '--out',
                   str(out), '--shape', '128', '160', '--time', '2',
                   cwd=tmp_path)
    assert out.is_file()
    assert 'exported backbone+neck' in log
    error = float(log.split('largest relative difference ')[1].split()[0])
    assert error < 1e-4
    assert 'ONNX Runtime:' in log and 'PyTorch:' in log


@pytest.mark.slow
def test_static_batch_backbone(checkpoint, tmp_path):
    out = tmp_path / 'backbone.onnx'
    log = run_tool(TOOL, FASTER, '--checkpoint', checkpoint, '--out',
                   str(out), '--part', 'backbone', '--static-batch', '1',
                   '--shape', '128', '160', cwd=tmp_path)
    assert 'exported backbone of' in log and out.is_file()


@pytest.mark.slow
@pytest.mark.parametrize('args,message', [
    (['--out', 'x.onnx'], 'exists'),
    (['--out', 'x.txt'], 'must name a .onnx file'),
    (['--out', 'y.onnx', '--checkpoint', 'missing.pth'], 'no such file'),
])
def test_bad_arguments_name_the_problem(args, message, tmp_path):
    (tmp_path / 'x.onnx').write_text('kept')
    result = run_tool(TOOL, FASTER, *args, cwd=tmp_path, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert (tmp_path / 'x.onnx').read_text() == 'kept'
