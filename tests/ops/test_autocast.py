"""The fused ops under autocast (MMEngine's ``AmpOptimWrapper``, bfloat16):
they run, compute the per-sample weights in float32 from the input's
float32 pixel sums, and leave the layer's output and gradients within a
stated tolerance of the float64 reference formulation; a dropped or doubled
attention is far outside it. (Exactness, float64 < 1e-8, is tested without
autocast: layers/test_reference_comparison.py.)"""
import copy

import pytest
import torch

from layer_cases import ApplySpy, make_layer, relative_error
from mmdyn.ops import dcd_weights, fused_ops, odconv_weights

#: (device, autocast dtype); a CPU autocasts to bfloat16 only
AUTOCASTS = [
    pytest.param('cpu', torch.bfloat16, id='cpu-bfloat16'),
    pytest.param('cuda', torch.float16, id='cuda-float16',
                 marks=pytest.mark.gpu),
    pytest.param('cuda', torch.bfloat16, id='cuda-bfloat16',
                 marks=pytest.mark.gpu),
]
#: largest difference from the reference, relative to the reference's
#: scale (largest magnitude, at least 1), of the output and of every
#: gradient: a few roundings to the autocast dtype's 11 or 8 bits
TOLERANCE = {torch.float16: 8e-3, torch.bfloat16: 6e-2}
FUNCTIONS = {
    'odconv': odconv_weights.FusedODConvWeights,
    'dcd': dcd_weights.FusedDCDWeights,
}
CASES = [('odconv-1x-fused', '3x3'), ('odconv-1x-fused', '1x1-stride2'),
         ('odconv-4x-fused', '3x3-stride2'),
         ('odconv-4x-fused', 'depthwise-stride2'), ('dcd-fused', '3x3'),
         ('dcd-fused', '1x1-stride2')]
MUTANTS = {'odconv-4x-fused': ['channel_fc', 'filter_fc', 'spatial_fc',
                               'kernel_fc'],
           'dcd-fused': ['scale', 'phi']}


def _results(forward, layer, x, grad_out):
    """The output and the gradients of the input and every parameter, in
    float64."""
    layer.zero_grad()
    inp = x.detach().clone().requires_grad_(True)
    out = forward(inp)
    (out.double() * grad_out).sum().backward()
    grads = [inp.grad] + [torch.zeros_like(p) if p.grad is None else p.grad
                          for p in layer.parameters()]  # None: dropped
    return out, [out.detach().double()] + [g.double() for g in grads]


def _case(layer_name, geometry, device, seed=0):
    layer, reference = make_layer(layer_name, geometry, dtype=torch.float32,
                                  seed=seed, device=device)
    layer.eval()
    torch.manual_seed(seed)
    x = torch.randn(3, layer.in_channels, 12, 10, device=device)
    return layer, reference, x


def _reference(layer, reference, x, grad_out, mutate=None):
    exact = copy.deepcopy(layer).double()
    return _results(lambda t: reference(exact, t, mutate), exact, x.double(),
                    grad_out)[1]


@pytest.mark.parametrize('device,dtype', AUTOCASTS)
@pytest.mark.parametrize('layer_name,geometry', CASES)
def test_fused_op_runs_under_autocast(layer_name, geometry, device, dtype,
                                      monkeypatch):
    layer, reference, x = _case(layer_name, geometry, device)
    with torch.no_grad(), fused_ops('off'):
        shape = layer(x).shape
    spy = ApplySpy(monkeypatch, FUNCTIONS[layer_name.split('-')[0]])
    grad_out = torch.randn(shape, dtype=torch.float64, device=device)
    expected = _reference(layer, reference, x, grad_out)
    errors = {}
    for mode in ('always', 'off'):
        with fused_ops(mode), torch.autocast(device, dtype=dtype):
            out, got = _results(layer, layer, x, grad_out)
        assert out.dtype == dtype
        errors[mode] = relative_error(got, expected)
    assert spy.calls == 1  # in mode 'always' only
    # the fused op is within the tolerance, as the layer's own operations
    # under autocast are
    assert errors['always'] < TOLERANCE[dtype], errors
    assert errors['off'] < TOLERANCE[dtype], errors


@pytest.mark.parametrize('device,dtype', AUTOCASTS)
@pytest.mark.parametrize('layer_name,attention',
                         [(name, att) for name, atts in MUTANTS.items()
                          for att in atts])
@pytest.mark.parametrize('how', ['drop', 'twice'])
def test_tolerance_catches_a_dropped_or_doubled_attention(
        layer_name, attention, how, device, dtype):
    """The tolerance above is tight enough: the reference with one attention
    dropped or applied twice differs from the fused op under autocast by
    far more."""
    layer, reference, x = _case(layer_name, '3x3', device)
    with torch.no_grad():
        shape = layer(x).shape
    grad_out = torch.randn(shape, dtype=torch.float64, device=device)
    mutant = _reference(layer, reference, x, grad_out,
                        mutate={attention: how})
    with fused_ops('always'), torch.autocast(device, dtype=dtype):
        got = _results(layer, layer, x, grad_out)[1]
    assert relative_error(got, mutant) > 5 * TOLERANCE[dtype]


def _first_tensor(args):
    return next(a for a in args if isinstance(a, torch.Tensor))


@pytest.mark.parametrize('layer_name', ['odconv-4x-fused', 'dcd-fused'])
def test_pixel_sums_are_float32(layer_name, monkeypatch):
    """A float16 sum over a feature map's pixels overflows: the op is given
    float32 sums of a half-precision input (bfloat16 here: what a CPU
    autocasts to)."""
    layer, _, x = _case(layer_name, '3x3', 'cpu')
    function = FUNCTIONS[layer_name.split('-')[0]]
    apply, seen = function.apply, []
    monkeypatch.setattr(function, 'apply',
                        lambda *args: seen.append(_first_tensor(args).dtype)
                        or apply(*args))
    with fused_ops('always'), torch.no_grad(), \
            torch.autocast('cpu', dtype=torch.bfloat16):
        layer(x.bfloat16())
    assert seen == [torch.float32]


def test_half_precision_parameters_under_autocast_are_not_fused(
        monkeypatch):
    """The op computes in float32, its parameters' dtype: a model cast to
    bfloat16 as a whole runs the layer's own operations."""
    layer, _, x = _case('odconv-4x-fused', '3x3', 'cpu')
    spy = ApplySpy(monkeypatch, odconv_weights.FusedODConvWeights)
    layer = layer.bfloat16()
    with fused_ops('always'), torch.no_grad(), \
            torch.autocast('cpu', dtype=torch.bfloat16):
        assert not odconv_weights.applies(layer, x.bfloat16())
        layer(x.bfloat16())
    assert spy.calls == 0


@pytest.mark.parametrize(
    'device,dtype',
    AUTOCASTS + [pytest.param('cpu', torch.float16, id='cpu-float16')])
@pytest.mark.parametrize('layer_name,geometry',
                         [('odconv-4x-fused', '3x3'),
                          ('odconv-1x-fused', '1x1-stride2'),
                          ('dcd-fused', '3x3')])
def test_weights_are_written_in_the_convs_dtype(layer_name, geometry, device,
                                                dtype):
    """Under autocast the fold writes the per-sample weights in the dtype
    autocast casts the conv's operands to (no cast of a weight-sized tensor
    each way), rounded to nearest from the float32 weights it computes
    (Triton's CPU interpreter truncates to bfloat16: within one unit in the
    last place there)."""
    layer, _, x = _case(layer_name, geometry, device)
    fold = {'odconv': lambda: odconv_weights.odconv_weights(layer, x),
            'dcd': lambda: dcd_weights.dcd_weights(layer, x)[0]}[
                layer_name.split('-')[0]]
    with fused_ops('always'), torch.no_grad():
        exact = fold()
        with torch.autocast(device, dtype=dtype):
            weights = fold()
    assert exact.dtype == torch.float32 and weights.dtype == dtype
    if device == 'cpu' and dtype == torch.bfloat16:
        ulp = torch.finfo(dtype).eps * exact.abs()
        assert ((weights.float() - exact).abs() <= ulp).all()
    else:
        assert torch.equal(weights, exact.to(dtype))
