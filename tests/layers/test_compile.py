"""The dynamic layers compile with torch.compile as one graph (no graph
breaks), forward and backward, and compute what they compute eagerly: what
MMEngine's ``compile`` setting relies on. The fused ops step aside under
``torch.compile`` (mmdyn.ops.dispatch), so the '-fused' case compiles the
layer's PyTorch operations. (The aot_eager backend traces what inductor
would, without generating code.)"""
import pytest
import torch

import mmdyn  # noqa: F401
from layer_cases import fused_mode, make_layer


@pytest.mark.parametrize('layer_name', ['odconv-1x', 'odconv-4x',
                                        'odconv-4x-fused', 'dcd',
                                        'dcd-pool2', 'dyconv', 'condconv'])
@pytest.mark.parametrize('training', [False, True])
def test_layer_compiles_as_one_graph(layer_name, training):
    torch._dynamo.reset()
    layer, _ = make_layer(layer_name, '3x3-stride2', dtype=torch.float32)
    layer.train(training)
    x = torch.randn(2, layer.in_channels, 9, 7, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend='aot_eager')
    results = []
    for forward in (layer, compiled):
        layer.zero_grad()
        inp = x.detach().clone().requires_grad_(True)
        with fused_mode(layer_name):
            out = forward(inp)
        out.square().sum().backward()
        results.append([out, inp.grad] + [p.grad for p in layer.parameters()])
    for eager, traced in zip(*results):
        torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('layer_name', ['odconv-4x', 'dcd', 'dyconv'])
def test_layer_compiles_under_autocast(layer_name):
    """The attention branch leaves autocast inside the compiled graph."""
    torch._dynamo.reset()
    layer, _ = make_layer(layer_name, '3x3', dtype=torch.float32)
    layer.eval()
    x = torch.randn(2, layer.in_channels, 9, 7)
    compiled = torch.compile(layer, fullgraph=True, backend='aot_eager')
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        eager, traced = layer(x), compiled(x)
    assert traced.dtype == eager.dtype == torch.bfloat16
    torch.testing.assert_close(traced, eager)
