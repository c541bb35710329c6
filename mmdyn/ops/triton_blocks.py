"""Pieces shared by mmdyn's Triton kernels (:mod:`.odconv_kernels`,
:mod:`.dcd_kernels`, and the block's epilogue of
:mod:`.per_sample_conv_kernels` and :mod:`.depthwise_conv_kernels`)."""
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


@triton.jit
def matmul(a, b, ACC: tl.constexpr):
    """``a @ b`` of two tiles (every side >= 16), accumulated in ACC at full
    precision (no TF32)."""
    return tl.dot(a.to(ACC), b.to(ACC), input_precision='ieee',
                  out_dtype=ACC)


@triton.jit
def sum_of_parts(parts, count, stride, offsets, mask, BP: tl.constexpr,
                 ACC: tl.constexpr):
    """``sum_p parts[p * stride + offsets]`` over ``p < count`` for a 1-D
    ``offsets``, BP parts per load (not one dependent load per part)."""
    acc = tl.zeros_like(offsets.to(ACC))
    for p0 in range(0, count, BP):
        p = p0 + tl.arange(0, BP)
        acc += tl.sum(tl.load(parts + p[:, None] * stride + offsets[None, :],
                              mask=(p < count)[:, None] & mask[None, :],
                              other=0).to(ACC), axis=0)
    return acc


@triton.jit
def sum_of_parts_2d(parts, count, stride, offsets, mask, BP: tl.constexpr,
                    ACC: tl.constexpr):
    """:func:`sum_of_parts` for a 2-D ``offsets``."""
    acc = tl.zeros_like(offsets.to(ACC))
    for p0 in range(0, count, BP):
        p = p0 + tl.arange(0, BP)
        acc += tl.sum(tl.load(
            parts + p[:, None, None] * stride + offsets[None, :, :],
            mask=(p < count)[:, None, None] & mask[None, :, :],
            other=0).to(ACC), axis=0)
    return acc


@triton.jit
def fold_tile(po, pc, CO, CI, KK, BO: tl.constexpr, BC: tl.constexpr,
              BT: tl.constexpr):
    """Offsets and mask of a (BO, BC, BT) tile of a (CO, CI, KK) weight, and
    its row, column and tap indices."""
    o = po * BO + tl.arange(0, BO)
    c = pc * BC + tl.arange(0, BC)
    t = tl.arange(0, BT)
    offsets = (o[:, None, None] * CI + c[None, :, None]) * KK + \
        t[None, None, :]
    mask = (o < CO)[:, None, None] & (c < CI)[None, :, None] & \
        (t < KK)[None, None, :]
    return o, c, t, offsets, mask


@triton.jit
def write_block_output(acc, b, p, p_in, o, o_in, norm_s, norm_h, res,
                       stride_rb, stride_rc, stride_rp, y, stride_yb,
                       stride_yc, stride_yp, sums, CO, HAS_NORM: tl.constexpr,
                       HAS_RES: tl.constexpr, RELU: tl.constexpr,
                       RELU_CAP: tl.constexpr, SUMS: tl.constexpr,
                       ACC: tl.constexpr):
    """Write a conv's (pixels ``p``, channels ``o``) output tile ``acc`` of
    sample ``b`` to ``y`` after the block's operations, each only where
    its flag is set: ``HAS_NORM`` an eval-mode norm as the affine map
    ``norm_s[o] v + norm_h[o]`` (contiguous (CO,)), then ``HAS_RES`` the
    residual ``res`` added, then ``RELU`` (capped at ``RELU_CAP`` where it
    is not 0: ReLU6); with ``SUMS``, also the tile's sums over its pixels
    of the output as written (in ``y``'s dtype), one per channel, to
    ``sums`` (B, tiles along the pixels, CO), contiguous, in ACC: what the
    next layer's attention pools (:mod:`mmdyn.ops.pixel_sums`). The grid's
    first axis runs along the pixels. ``y``'s and ``res``'s pixels are
    addressed by one flat index (their rows are dense)."""
    if HAS_NORM:
        acc = acc * tl.load(norm_s + o, mask=o_in, other=0).to(ACC)[None, :] \
            + tl.load(norm_h + o, mask=o_in, other=0).to(ACC)[None, :]
    if HAS_RES:
        acc += tl.load(res + b * stride_rb + p[:, None] * stride_rp +
                       o[None, :] * stride_rc,
                       mask=p_in[:, None] & o_in[None, :], other=0).to(ACC)
    if RELU:
        acc = tl.maximum(acc, 0)
        if RELU_CAP != 0:
            acc = tl.minimum(acc, RELU_CAP)
    out = acc.to(y.dtype.element_ty)
    tl.store(y + b * stride_yb + p[:, None] * stride_yp +
             o[None, :] * stride_yc,
             out, mask=p_in[:, None] & o_in[None, :])
    if SUMS:
        part = sums + (b * tl.num_programs(0) + tl.program_id(0)) * CO
        tl.store(part + o,
                 tl.sum(tl.where(p_in[:, None], out.to(ACC), 0), axis=0),
                 mask=o_in)
