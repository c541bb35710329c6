"""The layers and geometries the layer tests run over, and the comparison of
a layer with its plain reference formulation (reference.py)."""
import pytest
import torch

from mmdyn.layers import CondConv2d, DCDConv2d, DyConv2d, ODConv2d
from mmdyn.ops import fused_ops
from reference import (condconv_reference, dcd_reference, dyconv_reference,
                       odconv_reference)

# (in, out, kernel, stride, padding, dilation, groups)
GEOMETRIES = {
    '1x1': (8, 12, 1, 1, 0, 1, 1),
    '1x1-stride2': (8, 12, 1, 2, 0, 1, 1),
    '1x1-padded': (8, 12, 1, 1, 1, 1, 1),
    '3x3': (8, 12, 3, 1, 1, 1, 1),
    '3x3-stride2': (8, 12, 3, 2, 1, 1, 1),
    '3x3-dilated': (8, 12, 3, 1, 2, 2, 1),
    '3x3-grouped': (8, 12, 3, 1, 1, 1, 4),
    'depthwise': (8, 8, 3, 1, 1, 1, 8),
    'depthwise-stride2': (8, 8, 3, 2, 1, 1, 8),
    '5x5-unpadded': (8, 12, 5, 1, 0, 1, 1),
    '2x2-even': (8, 12, 2, 1, 0, 1, 1),
    '1x3': (8, 12, (1, 3), 1, (0, 1), 1, 1),
}

# name -> (class, reference, extra constructor kwargs, fused): a fused case
# runs with the fused ops of mmdyn.ops allowed wherever they apply (on CUDA,
# or in Triton's CPU interpreter), the others with them off, so that the
# layers' own PyTorch operations are tested on every device. Where a fused
# op does not apply (grouped convs, BatchNorm in training) the fused case
# runs the PyTorch operations.
LAYERS = {
    'odconv-1x': (ODConv2d, odconv_reference, dict(kernel_num=1), False),
    'odconv-4x': (ODConv2d, odconv_reference, dict(kernel_num=4), False),
    'odconv-1x-fused': (ODConv2d, odconv_reference, dict(kernel_num=1),
                        True),
    'odconv-4x-fused': (ODConv2d, odconv_reference, dict(kernel_num=4),
                        True),
    'dcd': (DCDConv2d, dcd_reference, dict(), False),
    'dcd-pool2': (DCDConv2d, dcd_reference, dict(pool_size=2), False),
    'dcd-fused': (DCDConv2d, dcd_reference, dict(), True),
    'dyconv': (DyConv2d, dyconv_reference, dict(kernel_num=3), False),
    'dyconv-1': (DyConv2d, dyconv_reference, dict(kernel_num=1), False),
    'condconv': (CondConv2d, condconv_reference, dict(kernel_num=3), False),
}


def triton_runs_here(device: str = 'cpu') -> bool:
    """Whether the fused Triton kernels can run in these tests on
    ``device``: Triton is installed, and the tests run on CUDA or in
    Triton's CPU interpreter (which tests/conftest.py turns on where there
    is no GPU)."""
    from mmdyn.ops.triton_utils import interpreting, triton_installed
    if not triton_installed():
        return False
    if device.startswith('cuda'):
        return True
    import triton
    version = tuple(int(v) for v in triton.__version__.split('.')[:2])
    # older interpreters cannot run a loop with a runtime bound on
    # numpy >= 2.4
    return interpreting() and version >= (3, 9)


def fused_mode(layer_name: str):
    """The fused-op mode a layer case runs in (a context manager)."""
    return fused_ops('always' if LAYERS[layer_name][3] else 'off')


def make_layer(layer_name, geometry, bias=False, temperature=1.0,
               dtype=torch.float64, seed=0, device='cpu'):
    cls, reference, extra, fused = LAYERS[layer_name]
    if fused and not triton_runs_here(device):
        pytest.skip('needs Triton: on CUDA, or triton >= 3.9 for its CPU '
                    'interpreter')
    in_ch, out_ch, kernel, stride, padding, dilation, groups = \
        GEOMETRIES[geometry]
    torch.manual_seed(seed)
    layer = cls(in_ch, out_ch, kernel, stride=stride, padding=padding,
                dilation=dilation, groups=groups, bias=bias,
                temperature=temperature, **extra)
    randomize(layer)
    return layer.to(device, dtype), reference


def randomize(layer):
    """Random parameters and BatchNorm statistics, so that every attention
    is far from constant and a dropped or doubled one shows."""
    with torch.no_grad():
        for name, param in layer.named_parameters():
            param.normal_(0, 0.5 if param.dim() > 1 else 1.0)
        for module in layer.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)


def compare(layer, reference, x, atol):
    """Forward and backward of the layer and of its reference; asserts that
    the output and every gradient differ by less than ``atol`` times their
    own scale (largest magnitude, at least 1) and returns the largest such
    relative difference. A parameter's gradient sums over the batch and the
    pixels, so it can be far larger than the output: float32 rounding then
    shows in it at the output's scale."""
    grad_out = None
    results = []
    for forward in (layer, lambda t: reference(layer, t)):
        layer.zero_grad()
        inp = x.detach().clone().requires_grad_(True)
        out = forward(inp)
        if grad_out is None:
            grad_out = torch.randn_like(out)
        (out * grad_out).sum().backward()
        grads = [inp.grad] + [p.grad for p in layer.parameters()]
        results.append([out.detach()] + [g.clone() for g in grads])
    fast, ref = results
    assert fast[0].shape == ref[0].shape
    error = relative_error(fast, ref)
    assert error < atol, error
    return error


def relative_error(got, expected):
    """The largest difference between each tensor of ``got`` and its
    counterpart in ``expected``, relative to the expected tensor's scale
    (largest magnitude, at least 1)."""
    errors = []
    for g, e in zip(got, expected, strict=True):
        assert g is not None and e is not None
        scale = max(e.abs().max().item(), 1.0)
        errors.append((g - e).abs().max().item() / scale)
    return max(errors)


class ApplySpy:
    """Counts the calls of an autograd Function (its ``apply``), or of the
    function ``name`` of a module, replaced through ``monkeypatch``: proof
    that a fast path ran."""

    def __init__(self, monkeypatch, function, name='apply'):
        self.calls = 0
        apply = getattr(function, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return apply(*args, **kwargs)

        monkeypatch.setattr(function, name, counted)


def compare_through(spy, layer_name, geometry, x, atol, mode='always',
                    **layer_args):
    """:func:`compare` for the layer case ``layer_name`` in ``geometry`` on
    input ``x``, in fused-op ``mode``; and that the fast path watched by
    ``spy`` (an :class:`ApplySpy`) ran once."""
    layer, reference = make_layer(layer_name, geometry, **layer_args)
    with fused_ops(mode):
        compare(layer.eval(), reference, x, atol=atol)
    assert spy.calls == 1


def forward_backward(conv, tensors, geometry, grad_out=None):
    """``conv(x, weight, bias, geometry)`` on copies of ``tensors`` (bias
    may be None): its output and the gradients of input, weights and bias
    (where given) for the output gradient ``grad_out`` (random if None),
    and that gradient."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(True)
              for t in tensors]
    out = conv(*leaves, geometry)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    (out * grad_out).sum().backward()
    return [out.detach()] + [t.grad for t in leaves if t is not None], \
        grad_out


def inference(layer_name, geometry, bias=True, device='cpu',
              dtype=torch.float64, batch=3, mutate=None):
    """The output of the layer case ``layer_name`` in ``geometry`` for a
    random input, in eval mode with nothing needing a gradient, with fused
    ops allowed ('always' on the CPU, 'auto' on a GPU); the reference's
    output (with ``mutate`` applied to its attentions); and the layer."""
    layer, reference = make_layer(layer_name, geometry, bias=bias,
                                  temperature=2.5, device=device,
                                  dtype=dtype)
    layer.eval().requires_grad_(False)
    x = torch.randn(batch, layer.in_channels, 9, 7, dtype=dtype,
                    device=device)
    with fused_ops('always' if device == 'cpu' else 'auto'):
        got = layer(x)
    return got, reference(layer, x, mutate=mutate), layer


#: how far a GPU result may be from the float32 reference, relative to the
#: output's scale: TF32 and float16 round to 10-bit mantissas, bfloat16 to
#: 7 bits
PRECISION_TOLERANCE = {'float32': 1e-4, 'tf32': 5e-3, 'float16': 5e-3,
                       'bfloat16': 3e-2}


def gpu_inference_error(layer, reference, precision, layout):
    """The relative error (:func:`relative_error`) of ``layer``'s
    inference on the GPU at 16 images of 28x28 in ``precision`` (float32,
    tf32, or float16 / bfloat16 under autocast) and ``layout`` ('nchw' or
    'channels-last') against ``reference(layer, x)`` in float32."""
    layer = layer.cuda()
    layer.eval().requires_grad_(False)
    x = torch.randn(16, layer.in_channels, 28, 28, device='cuda')
    if layout == 'channels-last':
        x = x.contiguous(memory_format=torch.channels_last)
    torch.backends.cudnn.allow_tf32 = False
    expected = reference(layer, x)
    torch.backends.cudnn.allow_tf32 = precision == 'tf32'
    dtype = getattr(torch, precision, torch.float32)
    with torch.autocast('cuda', dtype=dtype, enabled=dtype != torch.float32):
        got = layer(x)
    torch.backends.cudnn.allow_tf32 = False
    assert got.dtype == dtype
    return relative_error([got.float()], [expected])


def eval_backbone(cfg: dict):
    """A backbone built from ``cfg`` in float64 and eval mode, without
    gradients, with random BatchNorm statistics and weights: a MobileNetV2's
    scaled up (so that its ReLU6 caps some outputs), a ResNet's drawn from
    0.2-0.6 (not its zero-initialised residual norms, which would hide
    every conv but the last of a block from a comparison); and an input
    for it."""
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg).double()
    model.init_weights()
    for norm in model.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            with torch.no_grad():
                norm.running_mean.normal_(0, 0.2)
                norm.running_var.uniform_(0.5, 2.0)
                if 'MobileNet' in cfg['type']:
                    norm.weight.mul_(4)
                else:
                    norm.weight.uniform_(0.2, 0.6)
    model.eval().requires_grad_(False)
    return model, torch.randn(2, 3, 64, 64, dtype=torch.float64)
