"""The gradient buffers of CUDA-graphed backwards and their hand-over to
``.grad`` through autograd (mmdyn/runtime/grad_block.py)."""
import torch
from torch import nn

from mmdyn.runtime.grad_block import GradBlock


def mixed_params():
    """Two contiguous float32 parameters, a channels-last one and a
    float64 one."""
    torch.manual_seed(0)
    return [
        nn.Parameter(torch.randn(3, 2)),
        nn.Parameter(torch.randn(4)),
        nn.Parameter(torch.randn(2, 3, 3, 3).to(
            memory_format=torch.channels_last)),
        nn.Parameter(torch.randn(5, dtype=torch.float64)),
    ]


def storage(tensor):
    return tensor.untyped_storage().data_ptr()


def filled(block, params):
    for i, param in enumerate(params):
        block.buffer(param).copy_(torch.full_like(param, i + 1.0))
    return [block.buffer(p).clone() for p in params]


def test_buffers_share_a_tensor_per_dtype_and_keep_strides():
    params = mixed_params()
    block = GradBlock(params)
    buffers = [block.buffer(p) for p in params]
    for param, buffer in zip(params, buffers):
        assert buffer.shape == param.shape and buffer.dtype == param.dtype
        assert buffer.stride() == param.stride()
        assert buffer.data_ptr() != param.data_ptr()
    assert storage(buffers[0]) == storage(buffers[1])
    assert len({storage(b) for b in buffers}) == 3
    assert block.nbytes() == sum(p.numel() * p.element_size()
                                 for p in params)


def test_gradients_become_grad_without_another_copy():
    """Through autograd: copies of the buffers, the contiguous ones views
    of one new tensor, which autograd puts into .grad as they are."""
    params = mixed_params()
    block = GradBlock(params)
    expected = filled(block, params)
    has_grad = [True, True, True, False]

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *weights):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return (grad, *block.gradients(params, has_grad))

    Replay.apply(torch.ones(1, requires_grad=True), *params).sum().backward()
    assert storage(params[0].grad) == storage(params[1].grad)
    for param, value in zip(params[:3], expected):
        assert torch.equal(param.grad, value)
        assert storage(param.grad) != storage(block.buffer(param))
    assert params[2].grad.stride() == params[2].stride()
    assert params[3].grad is None
