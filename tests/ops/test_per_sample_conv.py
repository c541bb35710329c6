"""The per-sample convolution as a fused op (mmdyn/ops/per_sample_conv.py):
its output and gradients against one ``F.conv2d`` per sample, where it
applies and where not, and the layers that take it."""
import pytest
import torch

from layer_cases import (ApplySpy, compare, compare_through,
                         forward_backward, fused_mode, make_layer,
                         relative_error, triton_runs_here)
from mmdyn.layers import ODConv2d
from mmdyn.ops import dispatch, fused_ops
from mmdyn.ops import per_sample_conv as fused_conv
from reference import per_sample_conv_reference

# (in, out, kernel, stride, padding, dilation, H, W): every index path of
# the kernels, and channel counts that fill no tile (the float64 tiles are
# 32 x 32, 16 deep)
GEOMETRIES = {
    '1x1': (5, 7, 1, 1, 0, 1, 6, 5),
    '3x3-stride2': (6, 9, 3, 2, 1, 1, 7, 8),
    '3x3-dilated': (4, 6, 3, 1, 2, 2, 6, 7),
    '5x3-asymmetric': (3, 5, (5, 3), (1, 2), (2, 0), 1, 7, 9),
    'several-tiles': (40, 70, 3, 1, 1, 1, 7, 6),
}


def _needs_triton(device='cpu'):
    if not triton_runs_here(device):
        pytest.skip('needs Triton: on CUDA, or triton >= 3.9 for its CPU '
                    'interpreter')


def _case(name, batch=3, bias=True, dtype=torch.float64, device='cpu',
          seed=0):
    c, co, k, s, p, d, h, w = GEOMETRIES[name]
    k, s, p, d = (v if isinstance(v, tuple) else (v, v) for v in (k, s, p, d))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(batch, co, c, *k, generator=gen,
                         dtype=torch.float64)
    b = torch.randn(batch, co, generator=gen, dtype=torch.float64)
    tensors = [t.to(device, dtype) for t in (x, weight, b)]
    if not bias:
        tensors[2] = None
    return tensors, fused_conv.Geometry(s, p, d)


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('geometry', [
    # many tiles take about 12 s each in Triton's CPU interpreter
    pytest.param(g, marks=pytest.mark.slow) if g == 'several-tiles' else g
    for g in sorted(GEOMETRIES)
])
def test_equals_one_conv_per_sample(geometry, bias):
    _needs_triton()
    tensors, g = _case(geometry, bias=bias)
    with fused_ops('always'):
        got, grad_out = forward_backward(fused_conv.per_sample_conv,
                                         tensors, g)
    expected, _ = forward_backward(per_sample_conv_reference, tensors, g,
                                   grad_out)
    assert relative_error(got, expected) < 1e-8


def test_weight_gradient_in_one_part_and_in_many(monkeypatch):
    """The weight gradient sums the pixels in parts: one part, and as many
    as there are pixel blocks, give the same."""
    _needs_triton()
    tensors, g = _case('3x3-stride2')
    results = []
    for programs in (1, 10 ** 6):
        monkeypatch.setattr(fused_conv, '_MIN_PROGRAMS', programs)
        with fused_ops('always'):
            got, grad_out = forward_backward(
                fused_conv.per_sample_conv, tensors, g,
                None if not results else results[0][1])
        results.append((got, grad_out))
    expected, _ = forward_backward(per_sample_conv_reference, tensors, g,
                                   results[0][1])
    for got, _ in results:
        assert relative_error(got, expected) < 1e-8


@pytest.mark.parametrize('wrong', ['neighbour weights', 'neighbour input'])
def test_a_sample_convolved_with_its_neighbours_data_fails(wrong):
    """Negative checks: the comparison sees a kernel that reads the next
    sample's weights (output, input gradient) or input (weight gradient)."""
    _needs_triton()
    tensors, g = _case('3x3-stride2', bias=False)
    with fused_ops('always'):
        got, grad_out = forward_backward(fused_conv.per_sample_conv,
                                         tensors, g)
    x, weight, _ = tensors
    if wrong == 'neighbour weights':
        weight = weight.roll(1, dims=0)
        checked = [0, 1]  # output, input gradient
    else:
        x = x.roll(1, dims=0)
        checked = [2]  # weight gradient
    expected, _ = forward_backward(per_sample_conv_reference,
                                   [x, weight, None], g, grad_out)
    for i in checked:
        assert relative_error([got[i]], [expected[i]]) > 1e-2


def test_keeps_a_channels_last_input_in_its_layout():
    _needs_triton()
    tensors, g = _case('3x3-dilated')
    tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
    with fused_ops('always'):
        got, grad_out = forward_backward(fused_conv.per_sample_conv,
                                         tensors, g)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    expected, _ = forward_backward(per_sample_conv_reference, tensors, g,
                                   grad_out)
    assert relative_error(got, expected) < 1e-8


def _in_layout(t, layout):
    """``t`` (B, C, H, W) with the same values in memory laid out as
    ``layout`` says."""
    if layout == 'channels-last':
        return t.contiguous(memory_format=torch.channels_last)
    if layout == 'rows-apart':  # a slice of wider maps: rows W + 3 apart
        wide = torch.zeros(*t.shape[:-1], t.shape[-1] + 3, dtype=t.dtype)
        wide[..., :t.shape[-1]] = t
        return wide[..., :t.shape[-1]]
    if layout == 'broadcast':  # one value per map, as a sum's gradient
        return t[..., :1, :1].expand(t.shape)
    return t.contiguous()


@pytest.mark.parametrize('geometry', ['1x1', '3x3-stride2'])
@pytest.mark.parametrize('x_layout', ['nchw', 'channels-last', 'rows-apart'])
@pytest.mark.parametrize('grad_layout', ['nchw', 'channels-last',
                                         'rows-apart', 'broadcast'])
def test_any_layout_of_input_and_output_gradient(geometry, x_layout,
                                                 grad_layout):
    """The kernels address a map's pixels by one flat index where its rows
    are dense and a 1x1 filter reads each pixel in place, and otherwise
    gather the taps from a channels-last copy: every layout of the input
    and of the output gradient gives the reference's output and
    gradients."""
    _needs_triton()
    (x, weight, bias), g = _case(geometry)
    x = _in_layout(x, x_layout)
    leaves = [t.detach().requires_grad_(True) for t in (x, weight, bias)]
    refs = [t.detach().clone().requires_grad_(True) for t in leaves]
    with fused_ops('always'):
        out = fused_conv.per_sample_conv(*leaves, g)
    expected = per_sample_conv_reference(*refs, g)
    grad_out = _in_layout(torch.randn_like(expected), grad_layout)
    got = [out] + list(torch.autograd.grad(out, leaves, grad_out))
    expected = [expected] + list(torch.autograd.grad(expected, refs,
                                                     grad_out))
    assert relative_error(got, expected) < 1e-8
    assert got[1].stride() == x.contiguous(
        memory_format=torch.channels_last if x_layout == 'channels-last'
        else torch.contiguous_format).stride()


@pytest.mark.parametrize('kernel', [1, 3])
@pytest.mark.parametrize('layout', ['contiguous', 'channels-last'])
def test_weights_are_copied_to_the_tile_layout_only_where_they_differ(
        kernel, layout):
    """The kernels read per-sample weights as each output channel's (kh,
    kw, C): a copy is made only where the weights are laid out otherwise
    (contiguous 1x1 weights already are)."""
    weights = torch.randn(2, 6, 5, kernel, kernel)
    if layout == 'channels-last':
        weights = weights.permute(0, 1, 3, 4, 2).contiguous().permute(
            0, 1, 4, 2, 3)
    laid_out = fused_conv._tile_layout(weights)
    assert laid_out.movedim(-3, -1).is_contiguous()
    assert torch.equal(laid_out, weights)
    copied = kernel == 3 and layout == 'contiguous'
    assert (laid_out.data_ptr() != weights.data_ptr()) is copied


@pytest.mark.parametrize('case', ['applies', 'mode off', 'grouped',
                                  'float16', 'mixed dtypes', 'small batch'])
def test_applies_only_where_it_should(case, monkeypatch):
    _needs_triton()
    if case != 'small batch':
        monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 1)
    layer = ODConv2d(8, 8, 3, padding=1, kernel_num=4,
                     groups=4 if case == 'grouped' else 1)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    weight = torch.randn(2, 8, 8 // layer.groups, 3, 3, dtype=torch.float64)
    if case == 'applies':
        with fused_ops('always'):
            assert fused_conv.applies(layer, x, weight, None)
        return
    if case == 'float16':
        x, weight = x.half(), weight.half()
    elif case == 'mixed dtypes':
        weight = weight.float()
    with fused_ops('off' if case == 'mode off' else 'always'):
        assert not fused_conv.applies(layer, x, weight, None)


@pytest.mark.parametrize('case', [
    'large map', 'stride over large map', 'small map', 'two images', '3x3',
    'autocast'
])
def test_small_batches_take_it_only_for_1x1_layers_over_large_maps(case):
    """Up to MAX_FOLD_BATCH, only a 1x1 layer whose output has
    MIN_POINTWISE_PIXELS pixels or more, from three images on (two are the
    block-diagonal form's), takes the op (applies is decided from shapes
    alone), and under autocast none at inference (weights without a
    gradient)."""
    _needs_triton()
    side = 128 if case != 'small map' else 127
    kernel = 3 if case == '3x3' else 1
    stride = 2 if case == 'stride over large map' else 1
    layer = ODConv2d(4, 4, kernel, stride=stride, padding=kernel // 2)
    batch = 2 if case == 'two images' else 3
    # float32 under autocast, which the op would otherwise take
    dtype = torch.float32 if case == 'autocast' else torch.float64
    x = torch.randn(batch, 4, side * stride, side, dtype=dtype)
    weight = torch.randn(batch, 4, 4, kernel, kernel, dtype=dtype)
    expected = case == 'large map'
    autocast = torch.autocast('cpu', dtype=torch.float16,
                              enabled=case == 'autocast')
    with fused_ops('always'), autocast:
        assert fused_conv.applies(layer, x, weight, None) is expected


@pytest.mark.parametrize('case', [
    '3x3', '1x1 small map', 'two images', 'one image', 'no gradient',
    'weights without gradient', 'grouped'
])
def test_mixed_precision_training_takes_it_for_every_dense_layer(case):
    """Up to MAX_FOLD_BATCH under autocast, every dense layer of a training
    step (its weights need a gradient) takes the op from two images on,
    whatever its kernel and map; one image, a step without gradients and
    grouped layers keep cuDNN's conv."""
    _needs_triton()
    kernel = 1 if case == '1x1 small map' else 3
    layer = ODConv2d(4, 4, kernel, padding=kernel // 2,
                     groups=2 if case == 'grouped' else 1)
    batch = {'two images': 2, 'one image': 1}.get(case, 3)
    x = torch.randn(batch, 4, 9, 9)
    weight = torch.randn(batch, 4, layer.in_channels // layer.groups, kernel,
                         kernel,
                         requires_grad=case != 'weights without gradient')
    expected = case in ('3x3', '1x1 small map', 'two images')
    with fused_ops('always'), torch.autocast('cpu', dtype=torch.float16), \
            torch.set_grad_enabled(case != 'no gradient'):
        assert fused_conv.applies(layer, x, weight, None) is expected


@pytest.mark.parametrize('layer_name', ['odconv-1x-fused', 'odconv-4x-fused',
                                        'condconv'])
def test_layers_take_it_and_equal_their_reference(layer_name, monkeypatch,
                                                  large_batch):
    """The layers' per-sample convs go through the op (with fused ops on,
    at a large batch) and still equal the reference formulation, forward
    and backward."""
    _needs_triton()
    spy = ApplySpy(monkeypatch, fused_conv.PerSampleConv)
    x = torch.randn(3, 8, 7, 6, dtype=torch.float64)
    compare_through(spy, layer_name, '3x3-stride2', x, atol=1e-8)


@pytest.mark.gpu
@pytest.mark.parametrize('precision', ['tf32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('layout', ['nchw', 'channels-last'])
def test_gpu_reduced_precision_within_tolerance(precision, layout):
    """On the GPU in TF32, and under autocast in float16 / bfloat16, against
    the float32 reference: output and gradients within 5e-3 (bfloat16:
    3e-2, its 8-bit mantissa) of their scale, over realistic channels."""
    _needs_triton('cuda')
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 20, 24, generator=gen)
    weight = torch.randn(2, 96, 64, 3, 3, generator=gen) / 24
    bias = torch.randn(2, 96, generator=gen)
    tensors = [t.cuda() for t in (x, weight, bias)]
    if layout == 'channels-last':
        tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
    g = fused_conv.Geometry((1, 1), (1, 1), (1, 1))
    expected, grad_out = forward_backward(per_sample_conv_reference, tensors,
                                          g)
    torch.backends.cudnn.allow_tf32 = precision == 'tf32'
    with fused_ops('auto'):
        if precision == 'tf32':
            got, _ = forward_backward(fused_conv.per_sample_conv, tensors,
                                      g, grad_out)
        else:
            dtype = getattr(torch, precision)
            with torch.autocast('cuda', dtype=dtype):
                got, _ = forward_backward(fused_conv.per_sample_conv,
                                          tensors, g, grad_out)
            assert got[0].dtype == dtype
    got = [t.float() for t in got]
    assert relative_error(got, expected) < (
        3e-2 if precision == 'bfloat16' else 5e-3)


@pytest.mark.gpu
def test_gpu_layer_in_float32_equals_reference(large_batch, device='cuda'):
    """A fused ODConv (4x) layer in float32 on the GPU (TF32 off) takes the
    op and equals its reference formulation."""
    _needs_triton(device)
    layer, reference = make_layer('odconv-4x-fused', '3x3', device=device,
                                  dtype=torch.float32)
    x = torch.randn(2, 8, 9, 7, device=device)
    with fused_mode('odconv-4x-fused'):
        compare(layer.eval(), reference, x, atol=1e-4)


@pytest.mark.gpu
def test_gpu_small_batch_1x1_layer_equals_reference(monkeypatch):
    """At 3 images, a fused 1x1 ODConv (4x) layer over a 128x128 map takes
    the op (no fold limit changed) and equals its reference formulation in
    float32 (TF32 off)."""
    _needs_triton('cuda')
    spy = ApplySpy(monkeypatch, fused_conv.PerSampleConv)
    x = torch.randn(3, 8, 128, 128, device='cuda')
    compare_through(spy, 'odconv-4x-fused', '1x1', x, atol=1e-4,
                    device='cuda', dtype=torch.float32)
