"""A non-editable install, as a user gets it from a wheel: the configs and
tools ship inside the package (mmdyn/.mim), a config away from the source
tree inherits ``mmdyn::`` configs, and ``mim train mmdyn`` trains."""
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from demo import QUICK

IGNORE = shutil.ignore_patterns('.git', '__pycache__', '*.egg-info',
                                'work_dirs', 'data', 'build', 'dist', '.mim',
                                '.dev', '.before', 'checkpoints', '*.onnx')


def _run(*args, cwd):
    result = subprocess.run(list(args), capture_output=True, text=True,
                            cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[
        -3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def venv_python(tmp_path_factory):
    """A virtual environment (seeing this one's packages) with mmdyn
    installed from a wheel built from a copy of the repository."""
    tmp = tmp_path_factory.mktemp('packaging')
    source = tmp / 'source'
    shutil.copytree(REPO, source, ignore=IGNORE)
    _run(sys.executable, '-m', 'pip', 'wheel', str(source), '--no-deps',
         '--no-build-isolation', '-q', '-w', str(tmp / 'wheels'), cwd=tmp)
    wheel = next((tmp / 'wheels').glob('mmdyn-*.whl'))
    _run(sys.executable, '-m', 'venv', '--system-site-packages',
         str(tmp / 'venv'), cwd=tmp)
    python = str(tmp / 'venv' / 'bin' / 'python')
    _run(python, '-m', 'pip', 'install', '-q', '--no-deps', str(wheel),
         cwd=tmp)
    return python


@pytest.mark.slow
def test_wheel_ships_configs_and_a_user_config_inherits_them(venv_python,
                                                             tmp_path):
    (tmp_path / 'mine.py').write_text(
        "_base_ = 'mmdyn::odconv/faster-rcnn_r50-odconv-4x_fpn_1x_coco.py'\n"
        'model = dict(backbone=dict(kernel_num=1))\n')
    out = _run(venv_python, '-c', (
        'import mmdyn, os.path as osp; from mmengine.config import Config\n'
        "print('package', mmdyn.__file__)\n"
        "c = Config.fromfile('mine.py')\n"
        "print('backbone', c.model.backbone.type, c.model.backbone.kernel_num)"
        "\nprint('tools', osp.isfile(osp.join(osp.dirname(mmdyn.__file__), "
        "'.mim', 'tools', 'train.py')))"), cwd=tmp_path)
    assert f'package {tmp_path}' not in out
    package = out.split('package ')[1].split()[0]
    assert not package.startswith(REPO) and 'venv' in package
    assert 'backbone ODResNet 1' in out and 'tools True' in out


@pytest.mark.slow
def test_mim_trains_a_config_by_name(venv_python, tmp_path):
    pytest.importorskip('mim')
    out = _run(venv_python, '-m', 'mim', 'train', 'mmdyn',
               'faster-rcnn_r18-odconv-4x_fpn_demo-shapes.py', '--gpus', '0',
               '--work-dir', str(tmp_path / 'work'), '--cfg-options',
               'train_cfg.max_iters=2', *[o for o in QUICK if not o.startswith(
                   'train_cfg.max_iters')], cwd=tmp_path)
    assert 'Training finished successfully' in out
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()
