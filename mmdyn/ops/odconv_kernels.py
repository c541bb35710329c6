"""Triton kernels of ODConv's fused attentions and per-sample weights (see
:mod:`mmdyn.ops.odconv_weights`, which launches them).

Shapes, B the batch: ``pooled`` (B, C) sums of the input over H and W;
``u`` and ``h`` (B, A) the attention's pre-norm and hidden features;
``gates`` (B, J) the four attentions side by side (channel C, filter NF,
spatial NS, kernel NK columns; absent ones have 0 columns); the weight bank
``(K, CO, CI, KK)`` and the per-sample weights ``(B, CO, CI, KK)`` with CI
the input channels per group and KK the taps of a filter. ``DEPTHWISE``
layers (CI == 1, one output per input channel) have no filter attention and
scale weight row o by channel attention o. Accumulation is in ``ACC`` (float32,
or float64 for float64 inputs); the per-sample weights are stored in their
tensor's dtype (under autocast the conv's float16 or bfloat16).
"""
import triton
import triton.language as tl

from .triton_blocks import fold_tile, rows_times_vector, sum_of_parts


@triton.jit
def hidden_fwd(pooled, hw, fc_w, mean, var, gamma, beta, eps, u_out, h_out,
               C, A, HAS_AFFINE: tl.constexpr, BA: tl.constexpr,
               BC: tl.constexpr, ACC: tl.constexpr):
    """h = relu(bn(fc(pooled / hw))), the BatchNorm with running stats.
    Grid (B, cdiv(A, BA))."""
    b = tl.program_id(0)
    a = tl.program_id(1) * BA + tl.arange(0, BA)
    a_in = a < A
    u = rows_times_vector(fc_w, a, a_in, pooled + b * C, C, BA, BC, ACC) / hw
    rstd = 1.0 / tl.sqrt(tl.load(var + a, mask=a_in, other=1).to(ACC) + eps)
    z = (u - tl.load(mean + a, mask=a_in, other=0).to(ACC)) * rstd
    if HAS_AFFINE:
        z = z * tl.load(gamma + a, mask=a_in, other=0).to(ACC) + tl.load(
            beta + a, mask=a_in, other=0).to(ACC)
    tl.store(u_out + b * A + a, u, mask=a_in)
    tl.store(h_out + b * A + a, tl.maximum(z, 0), mask=a_in)


@triton.jit
def _heads_of(j, NC, NF, NS):
    """For rows ``j`` of the stacked sigmoid heads (channel, filter,
    spatial): whether each is in each head, and its row there (0 outside)."""
    in_c = j < NC
    in_f = (j >= NC) & (j < NC + NF)
    in_s = (j >= NC + NF) & (j < NC + NF + NS)
    return (in_c, in_f, in_s, tl.where(in_c, j, 0), tl.where(in_f, j - NC, 0),
            tl.where(in_s, j - NC - NF, 0))


@triton.jit
def _head_rows(j, a, a_in, w_c, w_f, w_s, A, NC, NF, NS, ACC: tl.constexpr):
    """Rows ``j`` of the stacked sigmoid heads' weights, columns ``a``: a
    (len(j), len(a)) tile."""
    in_c, in_f, in_s, row_c, row_f, row_s = _heads_of(j, NC, NF, NS)
    cols = a[None, :]
    tile = tl.load(w_c + row_c[:, None] * A + cols,
                   mask=in_c[:, None] & a_in[None, :], other=0).to(ACC)
    tile += tl.load(w_f + row_f[:, None] * A + cols,
                    mask=in_f[:, None] & a_in[None, :], other=0).to(ACC)
    tile += tl.load(w_s + row_s[:, None] * A + cols,
                    mask=in_s[:, None] & a_in[None, :], other=0).to(ACC)
    return tile


@triton.jit
def _head_bias(j, b_c, b_f, b_s, NC, NF, NS, ACC: tl.constexpr):
    in_c, in_f, in_s, row_c, row_f, row_s = _heads_of(j, NC, NF, NS)
    bias = tl.load(b_c + row_c, mask=in_c, other=0).to(ACC)
    bias += tl.load(b_f + row_f, mask=in_f, other=0).to(ACC)
    bias += tl.load(b_s + row_s, mask=in_s, other=0).to(ACC)
    return bias


@triton.jit
def gates_fwd(h, w_c, b_c, w_f, b_f, w_s, b_s, w_k, b_k, gates, A, NC, NF,
              NS, J, temperature, NK: tl.constexpr, BJ: tl.constexpr,
              BA: tl.constexpr, ACC: tl.constexpr):
    """Sigmoid gates of the channel, filter and spatial heads and the
    softmax of the kernel head, all at ``temperature``. Grid (B,
    cdiv(NC + NF + NS, BJ) + (NK > 1)): the last column of programs does
    the kernel head (NK <= BJ)."""
    b = tl.program_id(0)
    block = tl.program_id(1)
    num_sigmoid = NC + NF + NS
    if block * BJ < num_sigmoid:
        j = block * BJ + tl.arange(0, BJ)
        acc = tl.zeros([BJ], ACC)
        for a0 in range(0, A, BA):
            a = a0 + tl.arange(0, BA)
            a_in = a < A
            hid = tl.load(h + b * A + a, mask=a_in, other=0).to(ACC)
            tile = _head_rows(j, a, a_in, w_c, w_f, w_s, A, NC, NF, NS, ACC)
            acc += tl.sum(tile * hid[None, :], axis=1)
        logits = (acc + _head_bias(j, b_c, b_f, b_s, NC, NF, NS, ACC)) / \
            temperature
        # sigmoid without overflow: exp of minus |logit| only
        e = tl.exp(-tl.abs(logits))
        tl.store(gates + b * J + j,
                 tl.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e)),
                 mask=j < num_sigmoid)
    else:
        n = tl.arange(0, BJ)
        n_in = n < NK
        acc = rows_times_vector(w_k, n, n_in, h + b * A, A, BJ, BA, ACC)
        logits = (acc + tl.load(b_k + n, mask=n_in, other=0).to(ACC)) / \
            temperature
        logits = tl.where(n_in, logits, -float('inf'))
        e = tl.exp(logits - tl.max(logits, axis=0))
        e = tl.where(n_in, e, 0)
        tl.store(gates + b * J + num_sigmoid + n, e / tl.sum(e, axis=0),
                 mask=n_in)


@triton.jit
def _scales(g, o, c, t, CO, CI, KK, NC, NF, DEPTHWISE: tl.constexpr,
            HAS_FILTER: tl.constexpr, HAS_SPATIAL: tl.constexpr,
            ACC: tl.constexpr):
    """The channel, filter and spatial attentions of one sample at a tile,
    broadcastable to it (1 where the layer lacks one)."""
    if DEPTHWISE:
        a_c = tl.load(g + o, mask=o < CO, other=0).to(ACC)[:, None, None]
    else:
        a_c = tl.load(g + c, mask=c < CI, other=0).to(ACC)[None, :, None]
    if HAS_FILTER:
        a_f = tl.load(g + NC + o, mask=o < CO, other=0).to(ACC)[:, None, None]
    else:
        a_f = tl.full([1, 1, 1], 1.0, ACC)
    if HAS_SPATIAL:
        a_s = tl.load(g + NC + NF + t, mask=t < KK,
                      other=0).to(ACC)[None, None, :]
    else:
        a_s = tl.full([1, 1, 1], 1.0, ACC)
    return a_c, a_f, a_s


@triton.jit
def _mixed_weight(bank, g, offsets, mask, bank_stride, num_sigmoid,
                  NK: tl.constexpr, ACC: tl.constexpr, BO: tl.constexpr,
                  BC: tl.constexpr, BT: tl.constexpr):
    """sum_n a_w[n] W_n at a tile (Eq. 2's kernel-wise attention)."""
    acc = tl.zeros([BO, BC, BT], ACC)
    for n in tl.static_range(NK):
        a_w = tl.load(g + num_sigmoid + n).to(ACC)
        acc += a_w * tl.load(bank + n * bank_stride + offsets, mask=mask,
                             other=0).to(ACC)
    return acc


@triton.jit
def _single_weight(bank, offsets, mask, NK: tl.constexpr, BO: tl.constexpr,
                   BC: tl.constexpr, BT: tl.constexpr, ACC: tl.constexpr):
    """The bank's one weight at a tile if it has one (loaded once for all
    samples); zeros otherwise."""
    if NK == 1:
        single = tl.load(bank + offsets, mask=mask, other=0).to(ACC)
    else:
        single = tl.zeros([BO, BC, BT], ACC)
    return single


@triton.jit
def _sample_factors(gates, b, J, bank, single, o, c, t, offsets, mask, CO, CI,
                    KK, NC, NF, NS, NK: tl.constexpr, DEPTHWISE: tl.constexpr,
                    HAS_FILTER: tl.constexpr, HAS_SPATIAL: tl.constexpr,
                    BO: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
                    ACC: tl.constexpr):
    """Sample b's mixed weight at a tile (``single``, the bank's one weight
    loaded once, when NK == 1) and its channel, filter and spatial
    attentions."""
    g = gates + b * J
    if NK > 1:
        mixed = _mixed_weight(bank, g, offsets, mask, CO * CI * KK,
                              NC + NF + NS, NK, ACC, BO, BC, BT)
    else:
        mixed = single
    a_c, a_f, a_s = _scales(g, o, c, t, CO, CI, KK, NC, NF, DEPTHWISE,
                            HAS_FILTER, HAS_SPATIAL, ACC)
    return mixed, a_c, a_f, a_s


@triton.jit
def fold_fwd(gates, bank, out, B, CO, CI, KK, J, NC, NF, NS,
             NK: tl.constexpr, DEPTHWISE: tl.constexpr,
             HAS_FILTER: tl.constexpr, HAS_SPATIAL: tl.constexpr,
             BO: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr,
             ACC: tl.constexpr):
    """Per-sample weights ``a_f a_c a_s sum_n a_w W_n`` (Eq. 2). Grid
    (cdiv(CO, BO), cdiv(CI, BC))."""
    o, c, t, offsets, mask = fold_tile(tl.program_id(0), tl.program_id(1),
                                       CO, CI, KK, BO, BC, BT)
    single = _single_weight(bank, offsets, mask, NK, BO, BC, BT, ACC)
    for b in range(B):
        mixed, a_c, a_f, a_s = _sample_factors(
            gates, b, J, bank, single, o, c, t, offsets, mask, CO, CI, KK, NC,
            NF, NS, NK, DEPTHWISE, HAS_FILTER, HAS_SPATIAL, BO, BC, BT, ACC)
        tl.store(out + b * CO * CI * KK + offsets,
                 mixed * (a_f * a_c * a_s), mask=mask)


@triton.jit
def fold_bwd(gates, bank, grad, grad_bank, part_f, part_c, part_s, part_w,
             B, CO, CI, KK, J, NC, NF, NS, NK: tl.constexpr,
             DEPTHWISE: tl.constexpr, HAS_FILTER: tl.constexpr,
             HAS_SPATIAL: tl.constexpr, BO: tl.constexpr, BC: tl.constexpr,
             BT: tl.constexpr, ACC: tl.constexpr):
    """Backward of :func:`fold_fwd` for ``grad`` (B, CO, CI, KK): the bank's
    gradient, and per tile the partial sums of the attentions' gradients,
    reduced by :func:`heads_bwd`:

    - ``part_f`` (B, n_col_tiles, CO): filter (depthwise: channel) attention;
    - ``part_c`` (B, n_row_tiles, CI): channel attention (not depthwise);
    - ``part_s`` (B, n_tiles, KK): spatial attention;
    - ``part_w`` (B, n_tiles, NK): kernel attention.

    Grid (n_row_tiles, n_col_tiles) = (cdiv(CO, BO), cdiv(CI, BC)).
    """
    po = tl.program_id(0)
    pc = tl.program_id(1)
    n_row_tiles = tl.num_programs(0)
    n_col_tiles = tl.num_programs(1)
    tile = po * n_col_tiles + pc
    n_tiles = n_row_tiles * n_col_tiles
    o, c, t, offsets, mask = fold_tile(po, pc, CO, CI, KK, BO, BC, BT)
    bank_stride = CO * CI * KK
    num_sigmoid = NC + NF + NS
    single = _single_weight(bank, offsets, mask, NK, BO, BC, BT, ACC)
    if NK == 1:
        grad_bank_acc = tl.zeros([BO, BC, BT], ACC)
    for b in range(B):
        mixed, a_c, a_f, a_s = _sample_factors(
            gates, b, J, bank, single, o, c, t, offsets, mask, CO, CI, KK, NC,
            NF, NS, NK, DEPTHWISE, HAS_FILTER, HAS_SPATIAL, BO, BC, BT, ACC)
        dy = tl.load(grad + b * bank_stride + offsets, mask=mask,
                     other=0).to(ACC)
        dy_mixed = dy * mixed
        if DEPTHWISE:
            row = tl.sum(tl.sum(dy_mixed * a_s, axis=2), axis=1)
        else:
            row = tl.sum(tl.sum(dy_mixed * (a_c * a_s), axis=2), axis=1)
            col = tl.sum(tl.sum(dy_mixed * (a_f * a_s), axis=2), axis=0)
            tl.store(part_c + (b * n_row_tiles + po) * CI + c, col,
                     mask=c < CI)
        tl.store(part_f + (b * n_col_tiles + pc) * CO + o, row, mask=o < CO)
        if HAS_SPATIAL:
            tap = tl.sum(tl.sum(dy_mixed * (a_f * a_c), axis=1), axis=0)
            tl.store(part_s + (b * n_tiles + tile) * KK + t, tap,
                     mask=t < KK)
        scaled = dy * (a_f * a_c * a_s)
        if NK == 1:
            grad_bank_acc += scaled
        else:
            for n in tl.static_range(NK):
                w_n = tl.load(bank + n * bank_stride + offsets, mask=mask,
                              other=0).to(ACC)
                tl.store(part_w + (b * n_tiles + tile) * NK + n,
                         tl.sum(tl.sum(tl.sum(scaled * w_n, axis=2), axis=1),
                                axis=0))
    if NK == 1:
        tl.store(grad_bank + offsets, grad_bank_acc, mask=mask)
    else:
        for n in tl.static_range(NK):
            acc = tl.zeros([BO, BC, BT], ACC)
            for b in range(B):
                g = gates + b * J
                a_c, a_f, a_s = _scales(g, o, c, t, CO, CI, KK, NC, NF,
                                        DEPTHWISE, HAS_FILTER, HAS_SPATIAL,
                                        ACC)
                a_w = tl.load(g + num_sigmoid + n).to(ACC)
                dy = tl.load(grad + b * bank_stride + offsets, mask=mask,
                             other=0).to(ACC)
                acc += dy * (a_w * a_f * a_c * a_s)
            tl.store(grad_bank + n * bank_stride + offsets, acc, mask=mask)


@triton.jit
def _sum_parts(parts, b, j, first, count, n_parts, size, BR: tl.constexpr,
               ACC: tl.constexpr):
    """sum over p of parts[b, p, j - first] for the rows j in [first,
    first + count); 0 elsewhere. ``parts`` is (B, n_parts, size)."""
    rows = j - first
    rows_in = (rows >= 0) & (rows < count)
    rows = tl.where(rows_in, rows, 0)
    return sum_of_parts(parts + b * n_parts * size, n_parts, size, rows,
                        rows_in, BR, ACC)


@triton.jit
def heads_bwd(gates, h, w_c, w_f, w_s, w_k, part_f, part_c, part_s, part_w,
              grad_logits, grad_w_c, grad_b_c, grad_w_f, grad_b_f, grad_w_s,
              grad_b_s, grad_w_k, grad_b_k, part_h, B, A, CO, NC, NF, NS, J,
              n_row_tiles, n_col_tiles, temperature, NK: tl.constexpr,
              DEPTHWISE: tl.constexpr, BJ: tl.constexpr, BA: tl.constexpr,
              BR: tl.constexpr, ACC: tl.constexpr):
    """From the partial sums of :func:`fold_bwd`: the gradients of the
    heads' weights and biases, and per block of heads' rows the partial
    gradient of the hidden features, ``part_h`` (n_blocks, B, A). Grid
    (cdiv(NC + NF + NS, BJ) + (NK > 1), ); NK <= BJ."""
    block = tl.program_id(0)
    num_sigmoid = NC + NF + NS
    n_tiles = n_row_tiles * n_col_tiles
    sigmoid_rows = block * BJ < num_sigmoid
    if sigmoid_rows:
        j = block * BJ + tl.arange(0, BJ)
        j_in = j < num_sigmoid
    else:
        j = num_sigmoid + tl.arange(0, BJ)
        j_in = j < num_sigmoid + NK
    bias_acc = tl.zeros([BJ], ACC)
    for b in range(B):
        gate = tl.load(gates + b * J + j, mask=j_in, other=0).to(ACC)
        if sigmoid_rows:
            if DEPTHWISE:
                d_gate = _sum_parts(part_f, b, j, 0, NC, n_col_tiles, CO, BR,
                                    ACC)
            else:
                d_gate = _sum_parts(part_c, b, j, 0, NC, n_row_tiles, NC, BR,
                                    ACC)
                d_gate += _sum_parts(part_f, b, j, NC, NF, n_col_tiles, CO,
                                     BR, ACC)
            d_gate += _sum_parts(part_s, b, j, NC + NF, NS, n_tiles, NS, BR,
                                 ACC)
            d_logit = d_gate * gate * (1 - gate) / temperature
        else:
            d_gate = _sum_parts(part_w, b, j, num_sigmoid, NK, n_tiles, NK,
                                BR, ACC)
            d_logit = gate * (d_gate - tl.sum(gate * d_gate, axis=0)) / \
                temperature
        d_logit = tl.where(j_in, d_logit, 0)
        bias_acc += d_logit
        tl.store(grad_logits + b * J + j, d_logit, mask=j_in)
    tl.debug_barrier()
    for a0 in range(0, A, BA):
        a = a0 + tl.arange(0, BA)
        a_in = a < A
        w_acc = tl.zeros([BJ, BA], ACC)
        for b in range(B):
            d_logit = tl.load(grad_logits + b * J + j, mask=j_in,
                              other=0).to(ACC)
            hid = tl.load(h + b * A + a, mask=a_in, other=0).to(ACC)
            w_acc += d_logit[:, None] * hid[None, :]
            if sigmoid_rows:
                tile = _head_rows(j, a, a_in, w_c, w_f, w_s, A, NC, NF, NS,
                                  ACC)
            else:
                tile = tl.load(w_k + (j - num_sigmoid)[:, None] * A +
                               a[None, :],
                               mask=j_in[:, None] & a_in[None, :],
                               other=0).to(ACC)
            tl.store(part_h + (block * B + b) * A + a,
                     tl.sum(tile * d_logit[:, None], axis=0), mask=a_in)
        _store_head_rows(j, a, a_in, w_acc, grad_w_c, grad_w_f, grad_w_s,
                         grad_w_k, A, NC, NF, NS, NK, sigmoid_rows)
    _store_head_bias(j, bias_acc, grad_b_c, grad_b_f, grad_b_s, grad_b_k,
                     NC, NF, NS, NK, sigmoid_rows)


@triton.jit
def _store_head_rows(j, a, a_in, tile, w_c, w_f, w_s, w_k, A, NC, NF, NS,
                     NK, sigmoid_rows):
    cols = a[None, :]
    if sigmoid_rows:
        in_c, in_f, in_s, row_c, row_f, row_s = _heads_of(j, NC, NF, NS)
        tl.store(w_c + row_c[:, None] * A + cols, tile,
                 mask=in_c[:, None] & a_in[None, :])
        tl.store(w_f + row_f[:, None] * A + cols, tile,
                 mask=in_f[:, None] & a_in[None, :])
        tl.store(w_s + row_s[:, None] * A + cols, tile,
                 mask=in_s[:, None] & a_in[None, :])
    else:
        n = j - NC - NF - NS
        tl.store(w_k + n[:, None] * A + cols, tile,
                 mask=(n < NK)[:, None] & a_in[None, :])


@triton.jit
def _store_head_bias(j, values, b_c, b_f, b_s, b_k, NC, NF, NS, NK,
                     sigmoid_rows):
    if sigmoid_rows:
        in_c, in_f, in_s, row_c, row_f, row_s = _heads_of(j, NC, NF, NS)
        tl.store(b_c + row_c, values, mask=in_c)
        tl.store(b_f + row_f, values, mask=in_f)
        tl.store(b_s + row_s, values, mask=in_s)
    else:
        n = j - NC - NF - NS
        tl.store(b_k + n, values, mask=n < NK)


@triton.jit
def hidden_bwd(part_h, n_blocks, pooled, hw, u, h, fc_w, mean, var, gamma,
               eps, grad_fc_w, grad_pooled, grad_gamma, grad_beta, B, A, C,
               HAS_AFFINE: tl.constexpr, BA: tl.constexpr, BR: tl.constexpr,
               BC: tl.constexpr, ACC: tl.constexpr):
    """Backward of :func:`hidden_fwd` for the gradient of ``h``, summed here
    from ``part_h`` (n_blocks, B, A). A <= BA. Grid (cdiv(C, BC), ); the
    first program also writes the BatchNorm's gradients."""
    pc = tl.program_id(0)
    a = tl.arange(0, BA)
    a_in = a < A
    c = pc * BC + tl.arange(0, BC)
    c_in = c < C
    rstd = 1.0 / tl.sqrt(tl.load(var + a, mask=a_in, other=1).to(ACC) + eps)
    mu = tl.load(mean + a, mask=a_in, other=0).to(ACC)
    if HAS_AFFINE:
        scale = rstd * tl.load(gamma + a, mask=a_in, other=0).to(ACC)
    else:
        scale = rstd
    w = tl.load(fc_w + a[:, None] * C + c[None, :],
                mask=a_in[:, None] & c_in[None, :], other=0).to(ACC)
    w_acc = tl.zeros([BA, BC], ACC)
    gamma_acc = tl.zeros([BA], ACC)
    beta_acc = tl.zeros([BA], ACC)
    for b in range(B):
        d_h = sum_of_parts(part_h + b * A, n_blocks, B * A, a, a_in, BR, ACC)
        hid = tl.load(h + b * A + a, mask=a_in, other=0).to(ACC)
        d_z = tl.where(hid > 0, d_h, 0)
        gamma_acc += d_z * (tl.load(u + b * A + a, mask=a_in,
                                    other=0).to(ACC) - mu) * rstd
        beta_acc += d_z
        d_u = d_z * scale / hw
        p = tl.load(pooled + b * C + c, mask=c_in, other=0).to(ACC)
        w_acc += d_u[:, None] * p[None, :]
        tl.store(grad_pooled + b * C + c, tl.sum(w * d_u[:, None], axis=0),
                 mask=c_in)
    tl.store(grad_fc_w + a[:, None] * C + c[None, :], w_acc,
             mask=a_in[:, None] & c_in[None, :])
    if HAS_AFFINE:
        if pc == 0:
            tl.store(grad_gamma + a, gamma_acc, mask=a_in)
            tl.store(grad_beta + a, beta_acc, mask=a_in)
