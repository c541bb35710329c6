"""Backbones for the deployment tests, with BatchNorm statistics of real
activations (as a trained model has), so that outputs are well conditioned."""
import torch
from mmdet.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import mmdyn  # noqa: F401

#: every method on both backbones, and the static ones
BACKBONES = {
    'r50-static': dict(type='DynamicResNet', depth=50),
    'r50-odconv-1x': dict(type='ODResNet', depth=50, kernel_num=1),
    'r50-odconv-4x': dict(type='ODResNet', depth=50, kernel_num=4),
    'r50-dcd': dict(type='DCDResNet', depth=50),
    'r50-dyconv': dict(type='DyConvResNet', depth=50),
    'r50-condconv': dict(type='CondConvResNet', depth=50),
    'r18-odconv-1x': dict(type='ODResNet', depth=18, kernel_num=1),
    'r18-odconv-4x': dict(type='ODResNet', depth=18, kernel_num=4),
    'r18-dcd': dict(type='DCDResNet', depth=18),
    'r18-dyconv': dict(type='DyConvResNet', depth=18),
    'r18-condconv': dict(type='CondConvResNet', depth=18),
    'mbv2-static': dict(type='DynamicMobileNetV2'),
    'mbv2-odconv-1x': dict(type='ODMobileNetV2', kernel_num=1),
    'mbv2-odconv-4x': dict(type='ODMobileNetV2', kernel_num=4),
    'mbv2-dcd': dict(type='DCDMobileNetV2'),
    'mbv2-dyconv': dict(type='DyConvMobileNetV2'),
    'mbv2-condconv': dict(type='CondConvMobileNetV2'),
}


def calibrated(name, dtype=torch.float64, seed=0):
    """The backbone ``name`` in eval mode, its BatchNorms' running
    statistics those of random images (variances at least 0.1)."""
    torch.manual_seed(seed)
    model = MODELS.build(dict(BACKBONES[name], norm_eval=False)).to(dtype)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # the mean over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64, dtype=dtype))
    for norm in norms:
        norm.momentum = 0.1
        norm.running_var.clamp_(min=0.1)
        if norm.weight is not None:
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    return model.eval()
