"""Triton kernels of :mod:`mmdyn.layers.relu_then_sum`, which launches
them.

The input is contiguous (N, C, H, W): row ``r = n * C + c`` is the ``HW``
pixels of one channel of one sample. A program takes ``CHUNK`` pixels (a
multiple of BLOCK) of a row; its sum goes to ``partial[r, chunk]``, which
the launcher adds up in a fixed order.
"""
import triton
import triton.language as tl


@triton.jit
def relu_sum_fwd(x, y, partial, HW, CHUNK, CHUNKS, BLOCK: tl.constexpr,
                 ACC: tl.constexpr):
    """y = relu(x) and the chunk's sum of y. Grid (rows, CHUNKS)."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    base = row.to(tl.int64) * HW
    start = chunk * CHUNK
    acc = tl.zeros([BLOCK], ACC)
    for k0 in range(0, CHUNK, BLOCK):
        k = start + k0 + tl.arange(0, BLOCK)
        k_in = k < HW
        v = tl.load(x + base + k, mask=k_in, other=0)
        v = tl.where(v < 0, 0, v)  # NaN stays NaN, as in torch.relu
        tl.store(y + base + k, v, mask=k_in)
        acc += v.to(ACC)
    tl.store(partial + row * CHUNKS + chunk, tl.sum(acc, axis=0))


@triton.jit
def relu_sum_bwd(y, grad_y, grad_sum, grad_x, HW, CHUNK,
                 HAS_GRAD_Y: tl.constexpr, HAS_GRAD_SUM: tl.constexpr,
                 BLOCK: tl.constexpr):
    """grad_x = (grad_y + grad_sum[row]) where y > 0, else 0: the ReLU's
    gradient with the sum's broadcast into it. Grid (rows, CHUNKS)."""
    row = tl.program_id(0)
    base = row.to(tl.int64) * HW
    start = tl.program_id(1) * CHUNK
    for k0 in range(0, CHUNK, BLOCK):
        k = start + k0 + tl.arange(0, BLOCK)
        k_in = k < HW
        v = tl.load(y + base + k, mask=k_in, other=0)
        if HAS_GRAD_Y:
            g = tl.load(grad_y + base + k, mask=k_in, other=0)
        else:
            g = tl.zeros_like(v)
        if HAS_GRAD_SUM:
            g = g + tl.load(grad_sum + row)
        tl.store(grad_x + base + k, tl.where(v > 0, g, 0), mask=k_in)
