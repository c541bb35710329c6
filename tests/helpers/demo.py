"""The demo configs and a quick way to run mmdyn's tools on them, for the
tests that train, test or load through the tools."""
import os.path as osp
import subprocess
import sys

from conftest import REPO

MASK = osp.join(REPO, 'configs', 'demo',
                'mask-rcnn_r18-odconv-4x_fpn_demo-shapes.py')
FASTER = osp.join(REPO, 'configs', 'demo',
                  'faster-rcnn_r18-odconv-4x_fpn_demo-shapes.py')
RETINANET = osp.join(REPO, 'configs', 'demo',
                     'retinanet_r18-odconv-4x_fpn_demo-shapes.py')

# small and quick: 4 iterations, 128 px images, few detections per image
QUICK = [
    'demo_dataset.num_train=8', 'demo_dataset.num_val=4',
    'demo_dataset.image_size=128', 'train_cfg.max_iters=4',
    'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=2',
    'default_hooks.logger.interval=1', 'model.test_cfg.rcnn.max_per_img=10',
    'train_dataloader.batch_size=2'
] + [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
     for key in ('num_workers=0', 'persistent_workers=False')]


def run_tool(tool, *args, cwd, check=True):
    """Run one of tools/; its output (stdout and stderr) if it succeeds,
    or with ``check=False`` the finished process whatever it returned."""
    result = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', tool), *args],
        capture_output=True, text=True, cwd=cwd)
    if not check:
        return result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[
        -3000:]
    return result.stdout + result.stderr
