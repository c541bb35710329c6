"""MMDetection's own FLOP tool, ``tools/analysis_tools/get_flops.py`` (as
mmdet installs it, under ``mmdet/.mim``), on mmdyn configs: it counts the
multiply-adds that mmdyn's complexity tool counts, attention branches
included, because mmdyn registers its handles with MMEngine's counter
(mmdyn/_compat.py)."""
import argparse
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

from conftest import REPO
from mmdet.registry import MODELS
from mmdyn.analysis.complexity import detector_complexity
from mmdyn.datasets.demo_shapes import make_demo_shapes

CONFIGS = [
    f'{method}/retinanet_{backbone}-{method}{kernels}_fpn_1x_coco.py'
    for backbone in ('r50', 'mobilenetv2')
    for method, kernels in (('odconv', '-1x'), ('odconv', '-4x'),
                            ('dcd', ''), ('dyconv', '-4x'),
                            ('condconv', '-8x'))
]


def _get_flops_tool():
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools',
                    'analysis_tools', 'get_flops.py')
    if not osp.isfile(path):
        pytest.skip(f'mmdet installed without its tools ({path})')
    spec = importlib.util.spec_from_file_location('mmdet_get_flops', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    """One 128 x 128 validation image for the tool's dataloader."""
    root = str(tmp_path_factory.mktemp('demo_shapes'))
    make_demo_shapes(root, num_train=1, num_val=1, image_size=128)
    return root


def _options(shapes):
    return {
        'val_dataloader.dataset.data_root': shapes + '/',
        'val_dataloader.dataset.ann_file': 'annotations/instances_val.json',
        'val_dataloader.dataset.data_prefix.img': 'val/',
        # a 128 x 192 input (height x width), not a square: the shapes
        # the two tools are given must agree in their order
        'val_dataloader.dataset.pipeline.1.scale': (192, 128),
        'val_dataloader.dataset.pipeline.1.keep_ratio': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'model.backbone.init_cfg': None,
    }


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_mmdets_get_flops_counts_what_mmdyn_counts(name, shapes,
                                                   monkeypatch):
    tool = _get_flops_tool()
    # the tool rounds its count for printing (e.g. '0.15T'): compare the
    # number it rounds
    monkeypatch.setattr(tool, '_format_size', lambda size: size)
    config = osp.join(REPO, 'configs', name)
    args = argparse.Namespace(config=config, num_images=1,
                              cfg_options=_options(shapes))
    torch.manual_seed(0)
    theirs = tool.inference(args, MMLogger.get_current_instance())

    cfg = Config.fromfile(config)
    cfg.merge_from_dict(_options(shapes))
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    ours = detector_complexity(detector, theirs['pad_shape'])
    assert theirs['pad_shape'] == (128, 192)
    assert theirs['flops'] == ours.flops
    assert theirs['params'] == ours.params
