"""pixelwise_matmul: a per-sample 1x1 convolution as a batched matrix
product whose forward and backward products round as convolutions do."""
import pytest
import torch

from mmdyn.layers.conv_precision import (matmul_precision_of_convs,
                                         pixelwise_matmul, precision_differs)


def operands(dtype, bias=True, device=None):
    torch.manual_seed(0)
    kernels = torch.randn(3, 5, 4, dtype=dtype, device=device,
                          requires_grad=True)
    pixels = torch.randn(3, 4, 7, dtype=dtype, device=device,
                         requires_grad=True)
    bias = torch.randn(3, 5, dtype=dtype, device=device,
                       requires_grad=True) if bias else None
    return kernels, pixels, bias


@pytest.mark.parametrize('bias', [False, True])
def test_conv_precision_product_has_the_gradients_of_bmm(bias):
    args = operands(torch.float64, bias)
    assert torch.autograd.gradcheck(
        lambda *a: pixelwise_matmul(*a, like_conv=True), args)


@pytest.mark.parametrize('bias', [False, True])
def test_conv_precision_product_equals_the_plain_one_float32(bias):
    results = []
    for like_conv in (True, False):
        args = operands(torch.float32, bias)
        out = pixelwise_matmul(*args, like_conv=like_conv)
        out.square().sum().backward()
        results.append([out] + [a.grad for a in args if a is not None])
    for fast, plain in zip(*results):
        torch.testing.assert_close(fast, plain)


def test_a_batch_broadcast_kernel_gets_its_summed_gradient():
    """The layers pass one static kernel expanded over the batch."""
    kernel = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    pixels = torch.randn(3, 4, 7, dtype=torch.float64)
    pixelwise_matmul(kernel.expand(3, 5, 4), pixels,
                     like_conv=True).sum().backward()
    expected = pixels.sum(dim=(0, 2)).expand(5, 4)
    torch.testing.assert_close(kernel.grad, expected)


def test_precision_setting_is_restored_even_after_an_error():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = False, True
        with pytest.raises(RuntimeError, match='inside'):
            with matmul_precision_of_convs():
                assert matmul.allow_tf32
                raise RuntimeError('inside')
        assert not matmul.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def test_cpu_and_float64_use_the_plain_product():
    kernels, pixels, _ = operands(torch.float32)
    assert not precision_differs(pixels)
    assert not precision_differs(pixels.double())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_on_cuda_the_product_rounds_as_convs_do():
    """With PyTorch's defaults (TF32 for convs, not for matmuls) forward
    and backward run in TF32, and the user's setting is back afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = False, True
        torch.manual_seed(0)
        kernels = torch.randn(2, 32, 256, device='cuda', requires_grad=True)
        pixels = torch.randn(2, 256, 64, device='cuda', requires_grad=True)
        assert precision_differs(pixels)
        out = pixelwise_matmul(kernels, pixels)
        out.backward(torch.ones_like(out))
        assert not matmul.allow_tf32
        exact = torch.bmm(kernels.double(), pixels.double())
        error = ((out.double() - exact).abs().max() / exact.abs().max())
        assert 1e-5 < error < 1e-2  # TF32's 10-bit mantissa, not float32's
        exact_grad = torch.ones_like(exact) @ pixels.double().transpose(1, 2)
        error = ((kernels.grad.double() - exact_grad).abs().max() /
                 exact_grad.abs().max())
        assert 1e-6 < error < 1e-2
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
