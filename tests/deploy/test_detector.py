"""A whole detector through deployment: fuse_conv_bn leaves its predictions
as they were."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch.nn.modules.batchnorm import _BatchNorm

from demo import FASTER, MASK
from mmdyn.deploy import fuse_conv_bn


def _detector(config):
    init_default_scope('mmdet')
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    for module in model.modules():  # statistics a trained model has
        if isinstance(module, _BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _predict(model, image):
    sample = DetDataSample(metainfo=dict(
        img_shape=image.shape[-2:], ori_shape=image.shape[-2:],
        scale_factor=(1.0, 1.0), batch_input_shape=image.shape[-2:],
        pad_shape=image.shape[-2:]))
    with torch.no_grad():
        return model.predict(image[None], [sample])[0].pred_instances


@pytest.mark.slow
@pytest.mark.parametrize('config', [FASTER, MASK])
def test_predictions_unchanged_by_fusion(config):
    model = _detector(config)
    image = torch.randn(3, 128, 160)
    expected = _predict(model, image)
    got = _predict(fuse_conv_bn(copy.deepcopy(model)), image)
    assert len(expected) > 0 and len(got) == len(expected)
    assert torch.equal(got.labels, expected.labels)
    assert (got.bboxes - expected.bboxes).abs().max() < 1e-3
    assert (got.scores - expected.scores).abs().max() < 1e-5
    if 'masks' in expected:
        assert (got.masks != expected.masks).float().mean() < 1e-3
