"""mmdyn.deploy.fuse_conv_bn: every backbone computes what it computed
before, with no BatchNorm left after a convolution; the per-method rules
against a BatchNorm applied to the layer's output; and what MMCV's own
fusion would do to the dynamic layers."""
import copy

import pytest
import torch
from mmcv.cnn import fuse_conv_bn as mmcv_fuse_conv_bn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from deploy_cases import BACKBONES, calibrated
from layer_cases import randomize
from mmdyn.deploy import fold_norm_into_dynamic_conv, fuse_conv_bn
from mmdyn.layers import (BaseDynamicConv2d, CondConv2d, DCDConv2d, DyConv2d,
                          ODConv2d)


def _relative(got, expected):
    return max(((g - e).abs().max() / e.abs().max()).item()
               for g, e in zip(got, expected))


def norms_after_convs(model):
    """BatchNorms that follow a conv (static or dynamic) in their parent's
    registration order, outside the dynamic layers: what fusion removes."""
    found, last = [], None
    for child in model.children():
        if isinstance(child, _BatchNorm) and last is not None:
            found.append(child)
        if not isinstance(child, BaseDynamicConv2d):
            found += norms_after_convs(child)
        last = child if isinstance(child,
                                   (nn.Conv2d, BaseDynamicConv2d)) else None
    return found


@pytest.mark.slow
@pytest.mark.parametrize('name', BACKBONES)
def test_backbone_unchanged_by_fusion(name):
    """float64: equal to 1e-10. float32: as close to the float64 model as
    the unfused float32 model is (to 1e-5, or to twice the unfused model's
    own float32 error where that is larger: a randomly initialised
    ResNet-50 amplifies float32 rounding to about 1e-5 by itself)."""
    model = calibrated(name, torch.float64)
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        assert norms_after_convs(model)
        fused = fuse_conv_bn(copy.deepcopy(model))
        assert not norms_after_convs(fused)
        assert _relative(fused(x), expected) < 1e-10
        unfused_error = _relative(copy.deepcopy(model).float()(x.float()),
                                  expected)
        fused_error = _relative(fused.float()(x.float()), expected)
    assert fused_error < max(1e-5, 2 * unfused_error)


LAYERS = {
    'odconv-1x': lambda: ODConv2d(8, 12, 3, padding=1, kernel_num=1),
    'odconv-4x-bias': lambda: ODConv2d(8, 12, 3, padding=1, kernel_num=4,
                                       bias=True),
    'odconv-depthwise': lambda: ODConv2d(8, 8, 3, padding=1, groups=8,
                                         kernel_num=4),
    'dcd': lambda: DCDConv2d(8, 12, 3, padding=1),
    'dcd-bias-1x1': lambda: DCDConv2d(8, 12, 1, bias=True),
    'dyconv-bias': lambda: DyConv2d(8, 12, 3, padding=1, kernel_num=3,
                                    bias=True),
    'condconv': lambda: CondConv2d(8, 12, 1, kernel_num=3),
}


def _layer_and_norm(name, affine=True):
    torch.manual_seed(0)
    layer = LAYERS[name]()
    randomize(layer)
    norm = nn.BatchNorm2d(layer.out_channels, affine=affine)
    randomize(norm)
    return layer.double().eval(), norm.double().eval()


@pytest.mark.parametrize('name', LAYERS)
@pytest.mark.parametrize('affine', [True, False])
def test_each_rule_equals_the_norm_after_the_layer(name, affine):
    layer, norm = _layer_and_norm(name, affine)
    x = torch.randn(3, layer.in_channels, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        expected = norm(layer(x))
        fold_norm_into_dynamic_conv(layer, norm)
        assert _relative([layer(x)], [expected]) < 1e-12


@pytest.mark.parametrize('name', ['odconv-4x-bias', 'dcd', 'condconv'])
def test_a_rule_that_forgets_the_shift_or_scale_fails(name, monkeypatch):
    """Negative check: a fold without the BatchNorm's shift, or with its
    scale applied twice, is caught by the comparison above."""
    import mmdyn.deploy.fuse as fuse
    for mutation in ('no shift', 'scale twice'):
        layer, norm = _layer_and_norm(name)
        x = torch.randn(3, layer.in_channels, 7, 9, dtype=torch.float64)
        affine = fuse._affine

        def mutant(norm, dtype):
            scale, shift = affine(norm, dtype)
            if mutation == 'no shift':
                return scale, torch.zeros_like(shift)
            return scale * scale, shift

        with monkeypatch.context() as patch, torch.no_grad():
            patch.setattr(fuse, '_affine', mutant)
            expected = norm(layer(x))
            fold_norm_into_dynamic_conv(layer, norm)
            assert _relative([layer(x)], [expected]) > 1e-3


def test_rejects_a_norm_of_another_width_and_one_without_statistics():
    layer, _ = _layer_and_norm('odconv-1x')
    with pytest.raises(ValueError, match='does not follow'):
        fold_norm_into_dynamic_conv(layer, nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match='no running statistics'):
        fold_norm_into_dynamic_conv(
            layer, nn.BatchNorm2d(12, track_running_stats=False))


def test_mmcv_fusion_would_break_the_dynamic_layers():
    """Why mmdyn has its own: MMCV's walks into the layers and fuses their
    inner BatchNorms with the conv registered before them: ODConv's
    attention then computes something else, silently; in DCD, ``p`` meets
    ``bn1`` (which follows ``q``), an error where their widths differ."""
    layer, norm = _layer_and_norm('odconv-4x-bias')
    block = nn.Sequential(layer, norm).eval()
    x = torch.randn(3, 8, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        ours = fuse_conv_bn(copy.deepcopy(block))(x)
        theirs = mmcv_fuse_conv_bn(copy.deepcopy(block))(x)
    assert _relative([ours], [expected]) < 1e-12
    assert _relative([theirs], [expected]) > 1e-3
    layer, norm = _layer_and_norm('dcd')
    with pytest.raises(RuntimeError):
        mmcv_fuse_conv_bn(nn.Sequential(layer, norm).eval())
