"""A dynamic conv's per-sample bias added by the eval-mode BatchNorm after
it (mmdyn/ops/conv_norm.py) against ``norm(conv(x))``, forward and every
gradient; where it steps aside; and the ResNet blocks and MobileNetV2
ConvModules that use it against MMDetection's."""
import pytest
import torch
from mmcv.cnn import ConvModule
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.registry import MODELS
from torch import nn

from layer_cases import randomize, triton_runs_here
from mmdyn.layers import DCDConv2d, ODConv2d
from mmdyn.models.backbones.blocks import (DynamicBasicBlock,
                                           DynamicBottleneck,
                                           conv_module_forward)
from mmdyn.ops import fused_ops
from mmdyn.ops.conv_norm import conv_then_norm

pytestmark = pytest.mark.skipif(
    not triton_runs_here(),
    reason='the bias is split where DCD\'s fused op runs: needs Triton '
    '(triton >= 3.9 for its CPU interpreter)')


class SplitSpy:
    """Counts the per-sample biases DCD layers leave to their norm."""

    def __init__(self, monkeypatch):
        self.calls = 0
        split = DCDConv2d.forward_split_bias

        def counted(layer, x):
            out, bias = split(layer, x)
            self.calls += bias is not None
            return out, bias

        monkeypatch.setattr(DCDConv2d, 'forward_split_bias', counted)


def _norm(channels, affine=True, dtype=torch.float64):
    norm = nn.BatchNorm2d(channels, affine=affine).to(dtype).eval()
    with torch.no_grad():
        norm.running_mean.normal_(0, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        if affine:
            norm.weight.normal_(1, 0.5)
            norm.bias.normal_(0, 0.5)
    return norm


def _dcd(kernel=3, stride=1, bias=False, dtype=torch.float64):
    torch.manual_seed(0)
    conv = DCDConv2d(6, 10, kernel, stride=stride, padding=kernel // 2,
                     bias=bias)
    randomize(conv)
    return conv.to(dtype).eval()


def _run(fn, conv, norm, x):
    """Output and the gradients of input, conv and norm parameters."""
    inp = x.detach().clone().requires_grad_(True)
    with fused_ops('always'):
        out = fn(inp)
    grad_out = torch.randn(out.shape, dtype=out.dtype,
                           generator=torch.Generator().manual_seed(1))
    params = [p for p in list(conv.parameters()) + list(norm.parameters())
              if p.requires_grad]
    grads = torch.autograd.grad((out * grad_out).sum(), [inp] + params,
                                allow_unused=True)
    return [out] + list(grads)


def _assert_same(fast, reference, rtol):
    assert len(fast) == len(reference)
    for got, expected in zip(fast, reference):
        assert got is not None and expected is not None
        torch.testing.assert_close(got, expected, rtol=rtol,
                                   atol=rtol * expected.abs().max().item())


@pytest.mark.parametrize('dtype,rtol', [(torch.float64, 1e-10),
                                        (torch.float32, 1e-5)])
@pytest.mark.parametrize('case', ['3x3', '1x1 strided', 'layer bias',
                                  'no affine', 'batch 1'])
def test_matches_norm_of_conv(monkeypatch, case, dtype, rtol):
    conv = _dcd(kernel=1 if case == '1x1 strided' else 3,
                stride=2 if case == '1x1 strided' else 1,
                bias=case == 'layer bias', dtype=dtype)
    norm = _norm(10, affine=case != 'no affine', dtype=dtype)
    x = torch.randn(1 if case == 'batch 1' else 3, 6, 9, 7, dtype=dtype)
    spy = SplitSpy(monkeypatch)
    fused = _run(lambda t: conv_then_norm(conv, norm, t), conv, norm, x)
    assert spy.calls == 1
    _assert_same(fused, _run(lambda t: norm(conv(t)), conv, norm, x), rtol)


def test_split_bias_adds_up_to_forward():
    conv = _dcd()
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    with torch.no_grad(), fused_ops('always'):
        out, bias = conv.forward_split_bias(x)
        assert bias.shape == (2, 10)
        torch.testing.assert_close(out + bias[:, :, None, None], conv(x))
    with torch.no_grad(), fused_ops('off'):  # the bias is in out
        out, bias = conv.forward_split_bias(x)
        assert bias is None
        torch.testing.assert_close(out, conv(x))


@pytest.mark.parametrize('case', [
    'norm in training', 'hook on the norm', 'hook on the conv',
    'static conv', 'conv without a bias to leave', 'fused ops off',
    'autocast', 'half precision'
])
def test_steps_aside(monkeypatch, case):
    """Everywhere else it is ``norm(conv(x))``, and hooks run."""
    conv = _dcd()
    norm = _norm(10)
    calls = []
    mode = 'always'
    if case == 'norm in training':
        norm.train()
    elif case == 'hook on the norm':
        norm.register_forward_hook(lambda *args: calls.append('norm'))
    elif case == 'hook on the conv':
        conv.register_forward_pre_hook(lambda *args: calls.append('conv'))
    elif case == 'static conv':
        conv = nn.Conv2d(6, 10, 3, padding=1).double()
    elif case == 'conv without a bias to leave':
        conv = ODConv2d(6, 10, 3, padding=1).double().eval()
    elif case == 'fused ops off':
        mode = 'off'
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    spy = SplitSpy(monkeypatch)
    with fused_ops(mode):
        if case == 'autocast':
            conv, norm, x = conv.float(), norm.float(), x.float()
            with torch.no_grad(), torch.autocast('cpu',
                                                 dtype=torch.bfloat16):
                torch.testing.assert_close(conv_then_norm(conv, norm, x),
                                           norm(conv(x)))
        elif case == 'half precision':
            conv, norm, x = conv.bfloat16(), norm.bfloat16(), x.bfloat16()
            with torch.no_grad():
                torch.testing.assert_close(conv_then_norm(conv, norm, x),
                                           norm(conv(x)))
        else:
            calls.clear()
            got = conv_then_norm(conv, norm, x)
            hooked = list(calls)
            torch.testing.assert_close(got, norm(conv(x)), rtol=1e-12,
                                       atol=1e-12)
            if case.startswith('hook'):
                assert hooked == [case.split()[-1]]
    assert spy.calls == 0


def _backbone(cfg, x):
    """The backbone with ``norm_eval=True``, its BatchNorms' statistics
    those of ``x`` (untrained statistics let activations grow without
    bound) and their affine parameters random."""
    torch.manual_seed(0)
    model = MODELS.build(dict(cfg, norm_eval=False)).double()
    model.init_weights()
    for norm in model.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.momentum = 1.0
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0, 0.2)
    frozen, model.frozen_stages = model.frozen_stages, -1
    with torch.no_grad(), fused_ops('off'):
        model.train()
        model(x)
    model.frozen_stages, model.norm_eval = frozen, True
    model.train()
    return model


def _backbone_results(model, x, mode):
    inp = x.detach().clone().requires_grad_(True)
    # backward inside the mode too: with_cp recomputes the forward there
    with fused_ops(mode):
        outs = model(inp)
        generator = torch.Generator().manual_seed(1)
        loss = sum((o * torch.randn(o.shape, dtype=o.dtype,
                                    generator=generator)).sum()
                   for o in outs)
        params = [p for p in model.parameters() if p.requires_grad]
        return list(outs) + list(torch.autograd.grad(loss, [inp] + params))


BACKBONES = {
    'resnet50': dict(type='mmdyn.DCDResNet', depth=50, base_channels=8,
                     frozen_stages=1),
    'resnet50 with_cp': dict(type='mmdyn.DCDResNet', depth=50,
                             base_channels=8, with_cp=True),
    'mobilenetv2': dict(type='mmdyn.DCDMobileNetV2', widen_factor=0.25,
                        frozen_stages=1),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbones_match_mmdets_blocks(monkeypatch, name):
    """The backbones with their biases in the norms (fused ops on) compute,
    forward and backward, what MMDetection's blocks with the layers'
    PyTorch operations compute (fused ops off)."""
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model = _backbone(BACKBONES[name], x)
    spy = SplitSpy(monkeypatch)
    fused = _backbone_results(model, x, 'always')
    assert spy.calls > 0
    _assert_same(fused, _backbone_results(model, x, 'off'), 1e-9)


def test_resnet_blocks_are_mmdets():
    model = MODELS.build(
        dict(type='mmdyn.DCDResNet', depth=50, base_channels=8,
             num_dynamic_blocks=2))
    blocks = [block for stage in (model.layer1, model.layer2, model.layer3,
                                  model.layer4) for block in stage]
    assert [type(b) for b in blocks[-2:]] == [DynamicBottleneck] * 2
    assert all(type(b) is Bottleneck for b in blocks[:-2])
    model = MODELS.build(
        dict(type='mmdyn.DCDResNet', depth=18, base_channels=8))
    assert isinstance(model.layer1[0], DynamicBasicBlock)
    assert isinstance(model.layer1[0], BasicBlock)


@pytest.mark.parametrize('case', ['conv norm act', 'act conv norm',
                                  'explicit padding', 'hooked module'])
def test_conv_module_forward_matches_mmcvs(monkeypatch, case):
    """conv_module_forward computes what mmcv's ConvModule computes, through
    the norm only in the order conv, norm, and never around hooks."""
    kwargs = dict(conv_cfg=dict(type='DCDConv2d'), norm_cfg=dict(type='BN'))
    if case == 'act conv norm':
        kwargs['order'] = ('act', 'conv', 'norm')
    if case == 'explicit padding':
        kwargs['padding_mode'] = 'reflect'
    torch.manual_seed(0)
    module = ConvModule(6, 10, 3, padding=1, **kwargs).double()
    randomize(module.conv)
    module.norm.load_state_dict(_norm(10).state_dict())
    module.eval()
    calls = []
    if case == 'hooked module':
        module.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    spy = SplitSpy(monkeypatch)
    with torch.no_grad(), fused_ops('always'):
        got = conv_module_forward(module, x)
        assert calls == ([1] if case == 'hooked module' else [])
        torch.testing.assert_close(got, module(x))
    assert spy.calls == (case == 'conv norm act')
