"""The ReLU that also sums its output for the dynamic conv after it
(mmdyn/layers/relu_then_sum.py): its Triton kernels against ``relu(x)`` and
``relu(x).sum((2, 3))``, forward and backward; where it steps aside; the
layers given the sums against the layers summing themselves; and the ResNet
blocks that use it against the same backbone without it."""
import pytest
import torch
from torch import nn

import mmdyn.layers.relu_then_sum as relu_then_sum_module
from layer_cases import ApplySpy, randomize, triton_runs_here
from mmdyn.layers import DCDConv2d, DynamicConv2d, ODConv2d
from mmdyn.layers.relu_then_sum import relu_then_sum

pytestmark = pytest.mark.skipif(
    not triton_runs_here(),
    reason='needs Triton (CUDA, or its CPU interpreter)')


def _input(shape, dtype):
    x = torch.randn(shape, dtype=dtype, device='cpu',
                    generator=torch.Generator().manual_seed(0))
    x.view(-1)[::7] = 0  # the ReLU's gradient at 0 is 0
    return x.to(torch.get_default_device())


def _grads(fn, x, use_out=True, use_sum=True):
    """Outputs of ``fn(x)`` (relu(x), sums) and the input's gradient from
    random weights on the outputs asked for."""
    inp = x.detach().clone().requires_grad_(True)
    out, sums = fn(inp)
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, dtype=t.dtype, device='cpu',
                           generator=generator).to(t.device)
               for t in (out, sums)]
    loss = 0
    if use_out:
        loss = loss + (out * weights[0]).sum()
    if use_sum:
        loss = loss + (sums * weights[1]).sum()
    return out, sums, torch.autograd.grad(loss, inp)[0]


def _plain(x):
    out = torch.relu(x)
    return out, out.sum((2, 3))


@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-12),
                                       (torch.float32, 1e-5)])
@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (1, 2, 40, 80),
                                   (3, 1, 1, 1)],
                         ids=['one chunk', 'four chunks', 'one pixel'])
@pytest.mark.parametrize('used', ['both', 'out', 'sum'])
@pytest.mark.parametrize('inplace', [False, True], ids=['', 'inplace'])
def test_matches_relu_then_sum(shape, dtype, tol, used, inplace):
    x = _input(shape, dtype)
    flags = dict(use_out=used != 'sum', use_sum=used != 'out')

    def fused(inp):
        if inplace:  # as after a BatchNorm: not a leaf
            inp = inp * 1
        return relu_then_sum_module._ReLUThenSum.apply(inp, inplace)

    got = _grads(fused, x, **flags)
    expected = _grads(_plain, x, **flags)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=tol,
                                   atol=tol * max(1, b.abs().max().item()))


def test_chunks_split_rows_only_where_too_few():
    chunk, chunks = relu_then_sum_module._chunks(2, 40 * 80)
    assert (chunk, chunks) == (1024, 4)
    assert relu_then_sum_module._chunks(4096, 40 * 80) == (4096, 1)
    # a row of fewer blocks than it would take is one block a program
    assert relu_then_sum_module._chunks(8, 200 * 336) == (1024, 66)
    chunk, chunks = relu_then_sum_module._chunks(256, 200 * 336)
    assert chunk % 1024 == 0 and chunks * chunk >= 200 * 336 > (
        chunks - 1) * chunk and chunks * 256 >= 2048


def test_nan_stays_nan():
    x = _input((1, 2, 3, 3), torch.float32)
    x[0, 1, 1, 1] = float('nan')
    out, sums = relu_then_sum_module._ReLUThenSum.apply(x, False)
    assert torch.isnan(out[0, 1, 1, 1]) and torch.isnan(sums[0, 1])
    assert torch.isfinite(sums[0, 0])


def test_in_place_where_the_relu_is():
    x = _input((2, 6, 7, 9), torch.float64)
    conv = _od()
    for inplace in (False, True):
        inp = x.clone()
        out, sums = relu_then_sum(nn.ReLU(inplace=inplace), inp, conv)
        assert sums is not None
        assert (out.data_ptr() == inp.data_ptr()) == inplace
        torch.testing.assert_close(out, torch.relu(x))


def _od(triton=True, dtype=torch.float64):
    torch.manual_seed(0)
    conv = ODConv2d(6, 8, 3, padding=1, kernel_num=2)
    randomize(conv)
    conv.triton_kernels = triton
    return conv.to(dtype).eval()


def _dcd(triton=True, dtype=torch.float64):
    torch.manual_seed(0)
    conv = DCDConv2d(6, 8, 3, padding=1)
    randomize(conv)
    conv.fold_attentions = True
    conv.triton_kernels = triton
    return conv.to(dtype).eval()


@pytest.mark.parametrize('case', [
    'conv2d', 'relu6', 'hooked relu', 'hooked conv', 'conv backward hook',
    'channels last', 'conv without triton', 'training conv'
])
def test_steps_aside(monkeypatch, case):
    """Where the conv would not use the sums, or the fused pass would skip
    something, it is ``(relu(x), None)``, with the module's own call; an
    input of the same size is fused otherwise."""
    relu = nn.ReLU6() if case == 'relu6' else nn.ReLU()
    conv = nn.Conv2d(6, 8, 3) if case == 'conv2d' else _od(
        triton=case != 'conv without triton')
    if case == 'training conv':
        conv.train()  # its attention's BatchNorm then uses batch stats
    calls = []
    if case == 'hooked relu':
        relu.register_forward_hook(lambda *args: calls.append('relu'))
    if case == 'hooked conv':
        conv.register_forward_pre_hook(lambda *args: calls.append('conv'))
    if case == 'conv backward hook':
        # it would see the sums' gradient among the conv's input gradients
        conv.register_full_backward_hook(lambda *args: calls.append('conv'))
    x = _input((2, 6, 7, 9), torch.float64)
    assert relu_then_sum(nn.ReLU(), x, _od())[1] is not None
    if case == 'channels last':
        x = x.to(memory_format=torch.channels_last)
    spy = ApplySpy(monkeypatch, relu_then_sum_module._ReLUThenSum)
    out, sums = relu_then_sum(relu, x, conv)
    assert sums is None and spy.calls == 0
    torch.testing.assert_close(out, relu(x))
    assert calls == (['relu', 'relu'] if case == 'hooked relu' else [])


@pytest.mark.parametrize('make', [_od, _dcd], ids=['odconv', 'dcd'])
@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-10),
                                       (torch.float32, 1e-4)])
def test_layers_given_the_sums_match_their_own(monkeypatch, make, dtype,
                                               tol):
    """``conv(relu(x))``, forward and every gradient, whether the conv sums
    its input or is given the sums."""
    conv = make(dtype=dtype)
    relu = nn.ReLU()
    x = _input((2, 6, 7, 9), dtype)
    generator = torch.Generator().manual_seed(2)
    grad_out = torch.randn(2, 8, 7, 9, dtype=dtype, device='cpu',
                           generator=generator).to(x.device)

    def run(fn):
        inp = x.detach().clone().requires_grad_(True)
        out = fn(inp)
        params = list(conv.parameters())
        return [out] + list(torch.autograd.grad(
            (out * grad_out).sum(), [inp] + params, allow_unused=True))

    spy = ApplySpy(monkeypatch, relu_then_sum_module._ReLUThenSum)
    assert conv.takes_input_sum(x)
    fused = run(lambda t: conv(*relu_then_sum(relu, t, conv)))
    assert spy.calls == 1
    plain = run(lambda t: conv(relu(t)))
    for a, b in zip(fused, plain):
        if b is None:
            assert a is None
            continue
        torch.testing.assert_close(a, b, rtol=tol,
                                   atol=tol * max(1, b.abs().max().item()))


def test_layers_without_fused_kernels_take_no_sums():
    from mmdyn.layers import CondConv2d, DyConv2d
    x = _input((2, 6, 5, 5), torch.float32)
    for conv in (CondConv2d(6, 8, 3, kernel_num=2),
                 DyConv2d(6, 8, 3, kernel_num=2)):
        conv.triton_kernels = True
        assert not conv.eval().takes_input_sum(x)


BACKBONES = {
    'odconv resnet18': dict(type='mmdyn.ODResNet', depth=18, base_channels=8,
                            kernel_num=2),
    'odconv resnet50': dict(type='mmdyn.ODResNet', depth=50, base_channels=8,
                            frozen_stages=1),
    'odconv resnet50 with_cp': dict(type='mmdyn.ODResNet', depth=50,
                                    base_channels=8, with_cp=True),
    'dcd resnet50': dict(type='mmdyn.DCDResNet', depth=50, base_channels=8),
}


def _backbone_input(size):
    return torch.randn(2, 3, size, size, dtype=torch.float64, device='cpu',
                       generator=torch.Generator().manual_seed(0)).to(
                           torch.get_default_device())


def _record_sums_given(monkeypatch, model) -> set:
    """The names of ``model``'s convs given sums from now on: a set that
    fills as the model runs."""
    names = {id(m): n for n, m in model.named_modules()}
    given = set()
    takes = DynamicConv2d.takes_input_sum

    def recorded(layer, inp):
        if takes(layer, inp):
            given.add(names[id(layer)])
            return True
        return False

    monkeypatch.setattr(DynamicConv2d, 'takes_input_sum', recorded)
    return given


@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbones_match_themselves_without_it(monkeypatch, name):
    """The blocks that hand the ReLU's sums to the next conv compute,
    forward and backward, what they compute without."""
    from test_bias_into_norm import _backbone, _backbone_results
    # DCD's statistics from 2 pixels (the last stage at 32x32) overflow
    x = _backbone_input(64 if name.startswith('dcd') else 32)
    model = _backbone(dict(BACKBONES[name], triton_kernels=True), x)
    given = _record_sums_given(monkeypatch, model)
    spy = ApplySpy(monkeypatch, relu_then_sum_module._ReLUThenSum)
    fused = _backbone_results(model, x)
    # every conv that follows a ReLU was given sums somewhere (those of the
    # last stages at a pixel or two do not fold): in its block, and a
    # block's first from the block before it, in the next stage too
    assert {n.split('.')[-1] for n in given} == (
        {'conv1', 'conv2'} if 'resnet18' in name else
        {'conv1', 'conv2', 'conv3'})
    assert 'layer1.1.conv1' in given and 'layer1.0.conv1' not in given
    if 'resnet50' in name:
        assert 'layer2.0.conv1' in given
    calls = spy.calls
    monkeypatch.setattr(DynamicConv2d, 'takes_input_sum',
                        lambda layer, inp: False)
    plain = _backbone_results(model, x)
    assert spy.calls == calls
    assert len(fused) == len(plain)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-9,
                                   atol=1e-9 * max(1, b.abs().max().item()))


@pytest.mark.parametrize('hooked', ['block', 'stage', 'global'])
def test_blocks_with_hooks_run_as_modules(monkeypatch, hooked):
    """A block or stage with hooks is called (its hooks run) and is handed
    no sums; the outputs are the same, in MMDetection's order of stages."""
    from test_bias_into_norm import _backbone, _backbone_results
    x = _backbone_input(64)
    model = _backbone(
        dict(type='mmdyn.ODResNet', depth=18, base_channels=8,
             kernel_num=2, out_indices=(3, 0, 1), triton_kernels=True), x)
    names = {id(m): n for n, m in model.named_modules()}
    given = _record_sums_given(monkeypatch, model)
    plain = _backbone_results(model, x)
    assert {'layer1.1.conv1', 'layer2.0.conv1'} <= given
    calls = []

    def hook(module, args, output):
        calls.append(names[id(module)])

    if hooked == 'block':
        handle = model.layer1[1].register_forward_hook(hook)
    elif hooked == 'stage':
        handle = model.layer2.register_forward_hook(hook)
    else:
        handle = nn.modules.module.register_module_forward_hook(hook)
    given.clear()
    try:
        hooks = _backbone_results(model, x)
    finally:
        handle.remove()
    if hooked == 'global':
        assert given == set() and 'layer1.1' in calls
    else:
        assert calls == [{'block': 'layer1.1', 'stage': 'layer2'}[hooked]]
        missing = ('layer1.1.conv1' if hooked == 'block' else
                   'layer2.0.conv1')
        assert missing not in given and 'layer1.0.conv2' in given
    # mmdet returns the stages in their order, whatever out_indices' order
    assert [o.shape[1] for o in plain[:3]] == [8, 16, 64]
    # a conv summing its input itself adds in another order: gradients of
    # about 2e8 here differ in float64 by a few 1e-9 on a GPU
    for a, b in zip(hooks, plain):
        torch.testing.assert_close(a, b, rtol=1e-7,
                                   atol=1e-7 * max(1, b.abs().max().item()))
