"""The user's whole workflow on CPU: tools/train.py on a demo config
(dataset generated on the fly), --resume, tools/test.py printing COCO AP
(also with --show-dir and --tta), and a picture of the predictions."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdyn.checkpoint.io import safe_torch_load
from mmdyn.datasets import make_demo_shapes, prepare_demo_dataset
from demo import FASTER, MASK, QUICK, RETINANET, run_tool


def test_make_demo_shapes_is_deterministic(tmp_path):
    make_demo_shapes(str(tmp_path / 'a'), num_train=3, num_val=2,
                     image_size=96)
    make_demo_shapes(str(tmp_path / 'b'), num_train=3, num_val=2,
                     image_size=96)
    for split in ('train', 'val'):
        a, b = (json.load(open(tmp_path / d / 'annotations' /
                               f'instances_{split}.json')) for d in 'ab')
        assert a == b and a['annotations']
        for image in a['images']:
            assert (tmp_path / 'a' / split / image['file_name']).read_bytes(
            ) == (tmp_path / 'b' / split / image['file_name']).read_bytes()
        for ann in a['annotations']:
            x, y, w, h = ann['bbox']
            assert 0 <= x and x + w <= 96 and w > 0 and h > 0
            assert 0 < ann['area'] <= w * h + 1e-6


def test_prepare_demo_dataset_generates_once_and_keeps_user_folders(
        tmp_path):
    settings = dict(num_train=2, num_val=1, image_size=128)
    cfg = Config(dict(demo_dataset=dict(root=str(tmp_path / 'new/'),
                                        **settings)))
    assert prepare_demo_dataset(cfg) is True
    assert prepare_demo_dataset(cfg) is False
    assert (tmp_path / 'new' / 'annotations' / 'instances_val.json').is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
    # an empty folder is filled
    (tmp_path / 'empty').mkdir()
    cfg.demo_dataset.root = str(tmp_path / 'empty')
    assert prepare_demo_dataset(cfg) is True
    # a folder with the user's files is left alone
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    cfg.demo_dataset.root = str(tmp_path / 'mine')
    with pytest.raises(FileExistsError, match='demo_dataset.root'):
        prepare_demo_dataset(cfg)
    assert [p.name for p in (tmp_path / 'mine').iterdir()] == ['notes.txt']
    assert prepare_demo_dataset(Config(dict(model=None))) is False
    # a root the dataloaders do not read from is refused before writing
    cfg = Config(dict(demo_dataset=dict(root=str(tmp_path / 'elsewhere')),
                      val_dataloader=dict(dataset=dict(data_root='data/x/'))))
    with pytest.raises(ValueError, match='val_dataloader.dataset.data_root'):
        prepare_demo_dataset(cfg)
    assert not (tmp_path / 'elsewhere').exists()


@pytest.mark.slow
def test_train_resume_and_test_mask_rcnn_on_cpu(tmp_path):
    """Four iterations straight through, and the same run resumed at
    iteration 2 in another work dir, end with identical weights."""
    work = str(tmp_path / 'work')
    out = run_tool('train.py', MASK, '--work-dir', work, '--cfg-options',
                   *QUICK, cwd=tmp_path)
    assert 'generated the demo dataset' in out
    assert 'loss_mask' in out and osp.isfile(osp.join(work, 'iter_4.pth'))
    resumed = str(tmp_path / 'resumed')
    out = run_tool('train.py', MASK, '--work-dir', resumed, '--resume',
                   osp.join(work, 'iter_2.pth'), '--cfg-options', *QUICK,
                   cwd=tmp_path)
    assert 'resumed' in out.lower() and 'Iter(train) [3/4]' in out
    straight, again = (safe_torch_load(osp.join(folder, 'iter_4.pth'))
                       for folder in (work, resumed))
    assert straight['state_dict'].keys() == again['state_dict'].keys()
    differ = [key for key, value in straight['state_dict'].items()
              if not torch.equal(value, again['state_dict'][key])]
    assert not differ
    out = run_tool('test.py', MASK, osp.join(work, 'iter_4.pth'),
                   '--work-dir', work, '--cfg-options', *QUICK, cwd=tmp_path)
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out


@pytest.mark.slow
def test_train_and_test_faster_rcnn_on_cpu(tmp_path):
    work = str(tmp_path / 'work')
    quick = [o for o in QUICK if not o.startswith('train_cfg.max_iters')]
    run_tool('train.py', FASTER, '--work-dir', work, '--cfg-options',
             'train_cfg.max_iters=2', *quick, cwd=tmp_path)
    checkpoint = osp.join(work, 'iter_2.pth')
    out = run_tool('test.py', FASTER, checkpoint, '--work-dir', work,
                   '--cfg-options', *quick, cwd=tmp_path)
    assert 'coco/bbox_mAP' in out and 'segm_mAP' not in out
    # MMDetection's --show-dir and --tta
    out = run_tool('test.py', FASTER, checkpoint, '--work-dir', work,
                   '--show-dir', 'shown', '--tta', '--cfg-options', *quick,
                   cwd=tmp_path)
    assert 'coco/bbox_mAP' in out
    drawn = glob.glob(osp.join(work, '*', 'shown', '*.png'))
    assert len(drawn) == 4  # demo_dataset.num_val
    # DetInferencer on one image
    image = sorted(glob.glob(osp.join(tmp_path, 'data', 'demo_shapes',
                                      'val', '*.png')))[0]
    picture = tmp_path / 'picture.png'
    out = run_tool('misc/image_demo.py', image, FASTER, checkpoint, '--out',
                   str(picture), '--score-thr', '0', cwd=tmp_path)
    assert picture.is_file() and 'drawn on' in out
    result = run_tool('misc/image_demo.py', image, FASTER, checkpoint,
                      '--out', str(picture), cwd=tmp_path, check=False)
    assert result.returncode != 0 and 'exists' in result.stderr


@pytest.mark.slow
def test_train_and_test_retinanet_on_cpu(tmp_path):
    """The one-stage demo, through the same tools."""
    work = str(tmp_path / 'work')
    quick = [o for o in QUICK if not o.startswith(('train_cfg.max_iters',
                                                   'model.test_cfg'))]
    # after two iterations every score may be below RetinaNet's 0.05
    quick += ['model.test_cfg.max_per_img=10', 'model.test_cfg.score_thr=0']
    run_tool('train.py', RETINANET, '--work-dir', work, '--cfg-options',
             'train_cfg.max_iters=2', *quick, cwd=tmp_path)
    out = run_tool('test.py', RETINANET, osp.join(work, 'iter_2.pth'),
                   '--work-dir', work, '--cfg-options', *quick,
                   cwd=tmp_path)
    assert 'coco/bbox_mAP' in out and 'segm_mAP' not in out


@pytest.mark.parametrize('config', [MASK, FASTER, RETINANET])
def test_demo_configs_use_only_custom_imports(config):
    cfg = Config.fromfile(config)
    assert cfg.custom_imports == dict(imports=['mmdyn'],
                                      allow_failed_imports=False)
    assert cfg.model.backbone.type == 'ODResNet'
    assert cfg.model.neck.in_channels == [64, 128, 256, 512]
