"""tools/dist_train.sh and tools/dist_test.sh with two processes on a CPU
(gloo): MMEngine's DistributedDataParallel, without
find_unused_parameters, trains an ODConv ResNet-50 Faster R-CNN on the demo
data and evaluates it. (The same on two GPUs: docs/multi_gpu.md.)"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from demo import QUICK

R50 = osp.join(REPO, 'configs', 'demo',
               'faster-rcnn_r50-odconv-1x_fpn_demo-shapes.py')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# MMEngine's pytorch launcher calls torch.cuda.set_device(LOCAL_RANK) and
# wraps the model with device_ids=[LOCAL_RANK]; neither exists on a CPU
CPU_STANDS_IN = """
import pytest
import torch
if not torch.cuda.is_available():
    torch.cuda.set_device = lambda device: None
"""
CPU_OPTIONS = ['env_cfg.dist_cfg.backend=gloo',
               'model_wrapper_cfg.type=MMDistributedDataParallel',
               'model_wrapper_cfg.device_ids=None']


def run_script(script, *args, cwd):
    (cwd / 'sitecustomize.py').write_text(CPU_STANDS_IN)
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [str(cwd), os.environ.get('PYTHONPATH', '')]))
    env['PYTHON'] = sys.executable  # the scripts' interpreter: this one
    result = subprocess.run(
        ['bash', osp.join(REPO, 'tools', script), *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    return out


@pytest.mark.slow
def test_two_process_training_and_testing(tmp_path):
    work = str(tmp_path / 'work')
    options = ['--cfg-options', *CPU_OPTIONS, *QUICK,
               'train_cfg.max_iters=3']
    out = run_script('dist_train.sh', R50, '2', '--work-dir', work,
                     *options, cwd=tmp_path)
    assert 'Distributed launcher: pytorch' in out
    assert 'Distributed training: True' in out
    assert 'GPU number: 2' in out  # MMEngine's name for the world size
    assert "find_unused_parameters': True" not in out
    assert 'Iter(train) [3/3]' in out and 'loss_cls' in out
    out = run_script('dist_test.sh', R50, osp.join(work, 'iter_3.pth'), '2',
                     '--work-dir', work, *options, cwd=tmp_path)
    assert 'coco/bbox_mAP' in out


def fake_srun(tmp_path):
    """An ``srun`` that writes its arguments, one a line, to srun.args."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done > '
                    f'{tmp_path / "srun.args"}\n')
    srun.chmod(0o755)
    return dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
                GPUS='16', SRUN_ARGS='--quotatype=auto')


def test_slurm_scripts_start_one_task_per_gpu(tmp_path):
    env = fake_srun(tmp_path)
    subprocess.run(['bash', osp.join(REPO, 'tools', 'slurm_train.sh'),
                    'gpu', 'od', R50, 'work', '--auto-scale-lr',
                    '--cfg-options', 'a=1'], env=env, check=True,
                   capture_output=True)
    args = (tmp_path / 'srun.args').read_text().splitlines()
    assert args[:2] == ['-p', 'gpu']
    for option in ('--job-name=od', '--gres=gpu:8', '--ntasks=16',
                   '--ntasks-per-node=8', '--kill-on-bad-exit=1',
                   '--quotatype=auto'):
        assert option in args
    train = args.index('python')
    assert args[train + 1:] == [
        '-u', osp.join(REPO, 'tools', 'train.py'), R50, '--work-dir=work',
        '--launcher=slurm', '--auto-scale-lr', '--cfg-options', 'a=1']
    env['GPUS'] = '4'
    subprocess.run(['bash', osp.join(REPO, 'tools', 'slurm_test.sh'),
                    'gpu', 'od', R50, 'ckpt.pth', '--out', 'r.pkl'],
                   env=env, check=True, capture_output=True)
    args = (tmp_path / 'srun.args').read_text().splitlines()
    assert '--ntasks=4' in args and '--gres=gpu:4' in args
    test = args.index('python')
    assert args[test + 1:] == [
        '-u', osp.join(REPO, 'tools', 'test.py'), R50, 'ckpt.pth',
        '--launcher=slurm', '--out', 'r.pkl']


@pytest.mark.slow
def test_tools_destroy_the_process_group_after_a_run():
    import torch.distributed as dist
    from mmdyn.engine import distributed_shut_down_at_exit
    with distributed_shut_down_at_exit():
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:'
                                f'{free_port()}', rank=0, world_size=1)
        assert dist.is_initialized()
    assert not dist.is_initialized()
    with distributed_shut_down_at_exit():  # no process group: nothing to do
        pass
