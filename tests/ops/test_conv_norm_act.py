"""A block's conv, eval-mode BatchNorm, residual and ReLU applied by ODConv
(1x)'s inference kernel as it writes its output (mmdyn/ops/conv_norm.py,
``conv_norm_act``): against ``relu(norm(reference(x)) + residual)`` in
float64 (< 1e-8), shown to fail with the norm's shift, the residual or the
ReLU dropped; where it steps aside; and a ResNet-50 with ODConv against its
layers' PyTorch operations."""
import pytest
import torch
from torch import nn

from layer_cases import (PRECISION_TOLERANCE, eval_backbone, make_layer,
                         randomize, relative_error, triton_runs_here)
from mmdyn.layers import DCDConv2d, DyConv2d, ODConv2d
from mmdyn.ops import dcd_conv as low_rank
from mmdyn.ops import depthwise_conv as depthwise
from mmdyn.ops import fused_ops
from mmdyn.ops import per_sample_conv as per_sample
from mmdyn.ops import pixel_sums
from mmdyn.ops import scaled_weight_conv as scaled
from mmdyn.ops.conv_norm import conv_norm_act
from reference import (condconv_reference, dcd_reference,
                       dyconv_reference, odconv_reference)


@pytest.fixture(autouse=True)
def _triton_runs_here(request):
    """The CPU tests need Triton's CPU interpreter (triton >= 3.9), the
    ``gpu`` ones Triton on CUDA."""
    device = 'cuda' if request.node.get_closest_marker('gpu') else 'cpu'
    if not triton_runs_here(device):
        pytest.skip(f'needs Triton on {device} (on the CPU: triton >= 3.9 '
                    'for its interpreter)')


class EpilogueSpy:
    """Counts the layer forwards that a kernel's epilogue completes."""

    def __init__(self, monkeypatch):
        self.calls = 0
        forward = scaled.layer_forward
        conv = per_sample.per_sample_conv
        dcd = low_rank.dcd_conv
        depthwise_conv = depthwise.depthwise_conv

        def counted_forward(layer, x, *epilogue):
            self.calls += bool(epilogue)
            return forward(layer, x, *epilogue)

        def counted_conv(x, weight, bias, geometry, epilogue=None):
            self.calls += epilogue is not None
            return conv(x, weight, bias, geometry, epilogue)

        def counted_dcd(layer, x, *epilogue):
            self.calls += bool(epilogue)
            return dcd(layer, x, *epilogue)

        def counted_depthwise(x, weight, bias, geometry, *epilogue,
                              **scales):
            self.calls += bool(epilogue)
            return depthwise_conv(x, weight, bias, geometry, *epilogue,
                                  **scales)

        monkeypatch.setattr(scaled, 'layer_forward', counted_forward)
        monkeypatch.setattr(depthwise, 'depthwise_conv', counted_depthwise)
        monkeypatch.setattr(low_rank, 'dcd_conv', counted_dcd)
        monkeypatch.setattr(per_sample, 'per_sample_conv', counted_conv)


@pytest.fixture
def spy(monkeypatch):
    return EpilogueSpy(monkeypatch)


def _norm(channels):
    norm = nn.BatchNorm2d(channels).double().eval()
    with torch.no_grad():
        norm.running_mean.normal_(0, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_(1, 0.5)
        norm.bias.normal_(0, 0.5)
    return norm


def _case(geometry, layer_name='odconv-1x-fused'):
    layer, reference = make_layer(layer_name, geometry, bias=True,
                                  temperature=2.5)
    layer.eval().requires_grad_(False)
    norm = _norm(layer.out_channels)
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        shape = reference(layer, x).shape
    return layer, norm, x, torch.randn(shape, dtype=torch.float64)


def _expected(layer, norm, x, residual, relu, drop=None,
              reference=odconv_reference):
    out = reference(layer, x)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = 0 if drop == 'shift' else norm.bias - norm.running_mean * scale
    out = out * scale[:, None, None] + (
        shift[:, None, None] if drop != 'shift' else 0)
    if residual is not None and drop != 'residual':
        out = out + residual
    return out.relu() if relu and drop != 'relu' else out


def _error(got, expected):
    return relative_error([got], [expected])


@pytest.mark.parametrize('geometry', ['1x1', '1x1-stride2', '3x3',
                                      '3x3-stride2', '1x3'])
@pytest.mark.parametrize('residual, relu', [(False, True), (True, True),
                                            (True, False), (False, False)])
def test_equals_norm_residual_relu_of_reference(geometry, residual, relu,
                                                large_batch, spy):
    layer, norm, x, identity = _case(geometry)
    identity = identity if residual else None
    with torch.no_grad(), fused_ops('always'):
        got = conv_norm_act(layer, norm, x, identity,
                            nn.ReLU(inplace=True) if relu else None)
    assert spy.calls == 1
    assert _error(got, _expected(layer, norm, x, identity, relu)) < 1e-8


OTHER_LAYERS = {'odconv-4x-fused': odconv_reference,
                'dyconv': dyconv_reference,
                'condconv': condconv_reference,
                'dcd-fused': dcd_reference}


@pytest.mark.parametrize('layer_name', ['odconv-1x-fused', 'dyconv'])
def test_relu6_caps_at_six(layer_name, large_batch, spy):
    """MobileNetV2's ReLU6 (its blocks have no residual): the epilogue
    caps at 6, and the comparison sees an uncapped ReLU differ."""
    layer, norm, x, _ = _case('1x1', layer_name)
    with torch.no_grad():
        norm.weight.mul_(4)  # outputs well beyond 6
    with torch.no_grad(), fused_ops('always'):
        got = conv_norm_act(layer, norm, x, None, nn.ReLU6())
    assert spy.calls == 1
    relu = _expected(layer, norm, x, None, True,
                     reference=OTHER_LAYERS.get(layer_name,
                                                odconv_reference))
    assert relu.max() > 7
    assert _error(got, relu.clamp(max=6)) < 1e-8
    assert _error(got, relu) > 1e-3


@pytest.mark.parametrize('layer_name', list(OTHER_LAYERS))
@pytest.mark.parametrize('geometry', ['1x1', '3x3-stride2'])
def test_other_layers_equal_the_reference(layer_name, geometry, large_batch,
                                          spy):
    """Layers with weights of their own per sample (ODConv (4x), DyConv,
    CondConv) through the per-sample conv's kernel, and DCD through its
    own; with a bias each."""
    layer, norm, x, identity = _case(geometry, layer_name)
    with torch.no_grad(), fused_ops('always'):
        got = conv_norm_act(layer, norm, x, identity, nn.ReLU())
    assert spy.calls == 1
    expected = _expected(layer, norm, x, identity, True,
                         reference=OTHER_LAYERS[layer_name])
    assert _error(got, expected) < 1e-8


DEPTHWISE_LAYERS = {'odconv-1x-fused': odconv_reference,
                    'odconv-4x-fused': odconv_reference,
                    'dyconv': dyconv_reference,
                    'condconv': condconv_reference}


@pytest.mark.parametrize('layer_name', list(DEPTHWISE_LAYERS))
@pytest.mark.parametrize('geometry', ['depthwise', 'depthwise-stride2'])
@pytest.mark.parametrize('layout', ['nchw', 'channels-last'])
def test_depthwise_layers_equal_the_reference(layer_name, geometry, layout,
                                              large_batch, spy):
    """Depthwise layers (MobileNetV2's 3x3) through their own kernel, in
    either layout, with a bias, the residual and ReLU6; and with the
    samples' weights swapped, the comparison sees them differ."""
    layer, norm, x, identity = _case(geometry, layer_name)
    if layout == 'channels-last':
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), fused_ops('always'):
        got = conv_norm_act(layer, norm, x, identity, nn.ReLU6())
        weight, bias = layer.per_sample_weights(x)
        swapped = depthwise.depthwise_conv(
            x, weight.roll(1, dims=0), bias, per_sample.Geometry(
                layer.stride, layer.padding, layer.dilation))
    assert spy.calls == 1
    reference = DEPTHWISE_LAYERS[layer_name]
    assert _error(got, _expected(layer, norm, x, identity, True,
                                 reference=reference).clamp(max=6)) < 1e-8
    assert _error(swapped, reference(layer, x)) > 1e-3


@pytest.mark.parametrize('mutant', ['channel dropped', 'spatial dropped',
                                    'channel doubled', 'spatial doubled'])
def test_depthwise_odconv_attentions_matter(mutant, large_batch):
    """Depthwise ODConv (1x) scales its one weight by the channel and
    spatial attentions in the kernel: the comparison sees either dropped
    or doubled."""
    layer, _, x, _ = _case('depthwise', 'odconv-1x-fused')
    with torch.no_grad(), fused_ops('always'):
        att = layer.attention(x, layer.temperature)
        scales = dict(channel=att.channel, spatial=att.spatial)
        name, change = mutant.split()
        scales[name] = None if change == 'dropped' else 2 * scales[name]
        got = depthwise.depthwise_conv(
            x, layer.weight[0], layer.bias.expand(3, -1),
            per_sample.Geometry(layer.stride, layer.padding, layer.dilation),
            **scales)
    assert _error(got, odconv_reference(layer, x)) > 1e-3


@pytest.mark.parametrize('layer_name, geometry', [
    ('odconv-1x-fused', '3x3'), ('dyconv', '3x3'), ('dcd-fused', '3x3'),
    ('odconv-1x-fused', 'depthwise'), ('dyconv', 'depthwise')])
@pytest.mark.parametrize('drop', ['shift', 'residual', 'relu'])
def test_a_dropped_part_fails(layer_name, geometry, drop, large_batch, spy):
    """Negative checks: the comparison sees the output differ from one
    without the norm's shift, the residual or the ReLU."""
    layer, norm, x, identity = _case(geometry, layer_name)
    with torch.no_grad(), fused_ops('always'):
        got = conv_norm_act(layer, norm, x, identity, nn.ReLU())
    assert spy.calls == 1
    mutant = _expected(layer, norm, x, identity, True, drop=drop,
                       reference=OTHER_LAYERS.get(layer_name,
                                                  odconv_reference))
    assert _error(got, mutant) > 1e-3


@pytest.mark.parametrize('case', [
    'norm training', 'hook on norm', 'hardtanh', 'norm needs a gradient',
    'grouped', 'small batch', 'mode off'])
def test_steps_aside(case, monkeypatch, spy):
    """Where no kernel takes the layer, the norm or activation is not one
    it can apply, or a gradient is wanted, the block's own operations
    run."""
    if case != 'small batch':
        from mmdyn.ops import dispatch
        monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 1)
    layer, norm, x, identity = _case(
        '3x3-grouped' if case == 'grouped' else '3x3',
        'dyconv' if case == 'grouped' else 'odconv-1x-fused')
    act = nn.Hardtanh(0, 4) if case == 'hardtanh' else nn.ReLU()
    if case == 'norm training':
        norm.train()
    if case == 'hook on norm':
        norm.register_forward_hook(lambda *args: None)
    with torch.set_grad_enabled(case == 'norm needs a gradient'), \
            fused_ops('off' if case == 'mode off' else 'always'):
        got = conv_norm_act(layer, norm, x, identity, act)
        expected = act(norm(layer(x)) + identity)
    assert spy.calls == 0
    assert _error(got, expected) < 1e-12


BACKBONES = {
    'odconv-1x resnet50': dict(type='mmdyn.ODResNet', depth=50,
                               base_channels=8, kernel_num=1),
    'odconv-4x resnet50': dict(type='mmdyn.ODResNet', depth=50,
                               base_channels=8, kernel_num=4),
    'dcd resnet50': dict(type='mmdyn.DCDResNet', depth=50, base_channels=8),
    'odconv-1x mobilenetv2': dict(type='mmdyn.ODMobileNetV2',
                                  widen_factor=0.25, kernel_num=1),
    'dyconv mobilenetv2': dict(type='mmdyn.DyConvMobileNetV2',
                               widen_factor=0.25),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(BACKBONES))
def test_backbone_equals_its_layers_operations(name, large_batch, spy):
    """A backbone in eval mode: every block through the kernel's epilogue
    (the ResNet's norms, residuals and ReLUs; MobileNetV2's norms, ReLU6s
    and residuals) equals MMDetection's blocks with the layers' PyTorch
    operations."""
    model, x = eval_backbone(BACKBONES[name])
    with torch.no_grad():
        with fused_ops('always'):
            fused = model(x)
        with fused_ops('off'):
            plain = model(x)
    assert spy.calls > 0
    for got, expected in zip(fused, plain, strict=True):
        assert _error(got, expected) < 1e-9


#: the layers a ResNet's stage-2 3x3 can be, as the GPU test builds them
GPU_LAYERS = {'odconv-1x': lambda: ODConv2d(128, 128, 3, padding=1),
              'dyconv': lambda: DyConv2d(128, 128, 3, padding=1),
              'dcd': lambda: DCDConv2d(128, 128, 3, padding=1),
              'odconv-1x depthwise': lambda: ODConv2d(
                  128, 128, 3, padding=1, groups=128)}


@pytest.mark.gpu
@pytest.mark.parametrize('layer_name', list(GPU_LAYERS))
@pytest.mark.parametrize('precision', ['tf32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('layout', ['nchw', 'channels-last'])
def test_gpu_within_tolerance(layer_name, precision, layout, large_batch,
                              spy):
    """The stage-2 3x3 of a ResNet at 16 images in TF32 or under autocast,
    with the residual in the dtype a block passes it: the epilogue runs,
    and stays within
    ``PRECISION_TOLERANCE`` of the float32 reference."""
    torch.manual_seed(0)
    layer = GPU_LAYERS[layer_name]()
    randomize(layer)
    layer = layer.cuda().eval().requires_grad_(False)
    reference = {'odconv-1x': odconv_reference, 'dyconv': dyconv_reference,
                 'dcd': dcd_reference}[layer_name.split()[0]]
    norm = _norm(128).float().cuda()
    x = torch.randn(16, 128, 28, 28, device='cuda')
    identity = torch.randn(16, 128, 28, 28, device='cuda')
    if layout == 'channels-last':
        x = x.contiguous(memory_format=torch.channels_last)
        identity = identity.contiguous(memory_format=torch.channels_last)
    dtype = getattr(torch, precision, torch.float32)
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        expected = _expected(layer, norm, x, identity, True,
                             reference=reference)
        torch.backends.cudnn.allow_tf32 = precision == 'tf32'
        with torch.autocast('cuda', dtype=dtype,
                            enabled=dtype != torch.float32):
            got = conv_norm_act(layer, norm, x, identity.to(dtype),
                                nn.ReLU(inplace=True))
    torch.backends.cudnn.allow_tf32 = False
    assert spy.calls == 1
    assert got.dtype == dtype
    assert _error(got.float(), expected) < PRECISION_TOLERANCE[precision]
    # the output's pixel sums, kept for the next layer's pool
    assert _error(pixel_sums.recall(got), got.float().sum(dim=(2, 3))) < 1e-5
