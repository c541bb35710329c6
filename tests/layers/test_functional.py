"""The layers' shared functions (mmdyn/layers/functional.py)."""
import pytest
import torch
import torch.nn.functional as F

from mmdyn.layers import functional


@pytest.mark.parametrize('size', [(2, 2), (7, 7), (14, 14), (9, 6), (5, 1),
                                  (1, 4), (3, 112)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_2x2_pool_equals_adaptive_pooling(size, channels_last):
    """The 2x2 pool of DCD's branch takes a fixed window for channels-last
    inputs: its bins, which overlap by a row or column where a side is odd,
    and its gradient equal adaptive pooling's (float64)."""
    x = torch.randn(3, 5, *size, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    got = functional.adaptive_avg_pool2x2(x)
    expected = F.adaptive_avg_pool2d(x.detach().contiguous(), 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(got)
    (got_grad, ) = torch.autograd.grad(got, x, grad)
    ref = x.detach().contiguous().requires_grad_(True)
    (ref_grad, ) = torch.autograd.grad(F.adaptive_avg_pool2d(ref, 2), ref,
                                       grad)
    torch.testing.assert_close(got_grad, ref_grad, rtol=0, atol=1e-12)


def test_2x2_pool_of_a_channels_last_input_is_a_fixed_window(monkeypatch):
    """So that the test above compares the fixed window, not adaptive
    pooling with itself."""
    calls = []
    monkeypatch.setattr(F, 'avg_pool2d', lambda *a: calls.append(a) or
                        torch.zeros(3, 5, 2, 2))
    x = torch.randn(3, 5, 7, 6).to(memory_format=torch.channels_last)
    functional.adaptive_avg_pool2x2(x)
    assert len(calls) == 1 and calls[0][1:] == ((4, 3), (3, 3))
    functional.adaptive_avg_pool2x2(x.contiguous())
    assert len(calls) == 1
