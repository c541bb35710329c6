"""Pieces shared by mmdyn's Triton kernels (:mod:`.odconv_kernels`,
:mod:`.dcd_kernels`)."""
import triton
import triton.language as tl


@triton.jit
def rows_times_vector(matrix, rows, rows_in, vector, n, ROWS: tl.constexpr,
                      BLOCK: tl.constexpr, ACC: tl.constexpr):
    """``matrix[rows] @ vector`` for a row-major matrix of ``n`` columns:
    (ROWS, ) sums over the columns in blocks of BLOCK; 0 where not
    ``rows_in``."""
    acc = tl.zeros([ROWS], ACC)
    for k0 in range(0, n, BLOCK):
        k = k0 + tl.arange(0, BLOCK)
        k_in = k < n
        v = tl.load(vector + k, mask=k_in, other=0).to(ACC)
        w = tl.load(matrix + rows[:, None] * n + k[None, :],
                    mask=rows_in[:, None] & k_in[None, :], other=0).to(ACC)
        acc += tl.sum(w * v[None, :], axis=1)
    return acc
