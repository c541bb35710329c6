"""Triton kernels of DCD's fused per-sample weights, forward and backward
(see :mod:`mmdyn.ops.dcd_weights`, which launches them).

Shapes, B the batch: ``pooled`` (B, C) sums of the input over H and W;
``squeezed`` (B, S) the first product of the dynamic branch; ``phi`` (B, L,
L) and ``scale`` (B, CO): Phi(x) and Lambda(x); ``mixing`` (B, CO, L):
``M = P (diag(a2) Phi + I)``, and ``mixing_a1`` (B, L, CO): ``M diag(a1)``
transposed; P (CO, L), Q (L, CI); the static weight ``W0`` (CO, CI, KK) and the
per-sample weights (B, CO, CI, KK). The BatchNorms ``bn1`` and ``bn2`` are
affine maps ``a * v + c`` of their running statistics, computed here from
their parameters. Accumulation is in ``ACC`` (float32, or float64 for
float64 inputs); the per-sample weights are stored in their tensor's dtype
(under autocast the conv's float16 or bfloat16).
"""
import triton
import triton.language as tl

from .triton_blocks import (fold_tile, matmul, rows_times_vector,
                            sum_of_parts, sum_of_parts_2d)


@triton.jit
def _hard_sigmoid_gate(v):
    """relu6(v + 3) / 3, DCD's gate."""
    return tl.minimum(tl.maximum(v + 3.0, 0.0), 6.0) / 3.0


@triton.jit
def _bn_affine(index, mask, mean, var, weight, bias, eps,
               HAS_AFFINE: tl.constexpr, ACC: tl.constexpr):
    """``(a, c)`` of a BatchNorm in eval mode at ``index``."""
    a = 1.0 / tl.sqrt(tl.load(var + index, mask=mask, other=1).to(ACC) + eps)
    if HAS_AFFINE:
        a = a * tl.load(weight + index, mask=mask, other=0).to(ACC)
    c = -tl.load(mean + index, mask=mask, other=0).to(ACC) * a
    if HAS_AFFINE:
        c += tl.load(bias + index, mask=mask, other=0).to(ACC)
    return a, c


@triton.jit
def _hard_sigmoid_grad(v, grad):
    """The gradient through the gate at ``v``: relu6 passes it strictly
    inside (0, 6)."""
    shifted = v + 3.0
    return tl.where((shifted > 0) & (shifted < 6), grad / 3.0, 0.0)


@triton.jit
def _stacked_head_rows(block, s, s_in, w_phi, w_scale, S, LL, CO,
                       BJ: tl.constexpr, ACC: tl.constexpr):
    """Rows ``j`` of block ``block`` of the stacked heads (``fc_phi``'s LL
    rows, then ``fc_scale``'s CO), columns ``s``: whether each row is in
    either head, its row there (0 outside) and the (BJ, BS) weight tile."""
    j = block * BJ + tl.arange(0, BJ)
    in_phi = j < LL
    in_scale = (j >= LL) & (j < LL + CO)
    rows_phi = tl.where(in_phi, j, 0)
    rows_scale = tl.where(in_scale, j - LL, 0)
    w = tl.load(w_phi + rows_phi[:, None] * S + s[None, :],
                mask=in_phi[:, None] & s_in[None, :], other=0).to(ACC)
    w += tl.load(w_scale + rows_scale[:, None] * S + s[None, :],
                 mask=in_scale[:, None] & s_in[None, :], other=0).to(ACC)
    return in_phi, in_scale, rows_phi, rows_scale, w


@triton.jit
def squeeze_fwd(pooled, hw, w_in, out, C, S, BS: tl.constexpr,
                BC: tl.constexpr, ACC: tl.constexpr):
    """``fc[0]`` on the pooled mean: (B, S). Grid (B, cdiv(S, BS))."""
    b = tl.program_id(0)
    s = tl.program_id(1) * BS + tl.arange(0, BS)
    s_in = s < S
    acc = rows_times_vector(w_in, s, s_in, pooled + b * C, C, BS, BC, ACC)
    tl.store(out + b * S + s, acc / hw, mask=s_in)


@triton.jit
def heads_fwd(squeezed, w_gate, w_phi, w_scale, phi, scale, gate_out,
              hidden_out, scale_logits, S, LL, CO, temperature,
              SAVE: tl.constexpr, BJ: tl.constexpr, BS: tl.constexpr,
              BG: tl.constexpr, ACC: tl.constexpr):
    """The squeeze gate (``hidden = y * gate(W y)``), then rows of
    ``fc_phi`` (Phi(x), divided by the temperature) and ``fc_scale``
    (Lambda(x), gated). Each program recomputes ``hidden`` (S <= BS).
    ``SAVE``: also store what the backward needs, the gate's logits and
    ``hidden`` (B, S) and Lambda's logits (B, CO).
    Grid (B, cdiv(LL + CO, BJ))."""
    b = tl.program_id(0)
    s = tl.arange(0, BS)
    s_in = s < S
    gate = rows_times_vector(w_gate, s, s_in, squeezed + b * S, S, BS, BG,
                             ACC)
    hidden = tl.load(squeezed + b * S + s, mask=s_in, other=0).to(ACC) * \
        _hard_sigmoid_gate(gate)
    if SAVE:
        if tl.program_id(1) == 0:
            tl.store(gate_out + b * S + s, gate, mask=s_in)
            tl.store(hidden_out + b * S + s, hidden, mask=s_in)
    in_phi, in_scale, rows_phi, rows_scale, w = _stacked_head_rows(
        tl.program_id(1), s, s_in, w_phi, w_scale, S, LL, CO, BJ, ACC)
    logits = tl.sum(w * hidden[None, :], axis=1) / temperature
    tl.store(phi + b * LL + rows_phi, logits, mask=in_phi)
    tl.store(scale + b * CO + rows_scale, _hard_sigmoid_gate(logits),
             mask=in_scale)
    if SAVE:
        tl.store(scale_logits + b * CO + rows_scale, logits, mask=in_scale)


@triton.jit
def _mixing_block(block, p, mean1, var1, w1, b1, eps1, mean2, var2, w2, b2,
                  eps2, CO, L, HAS_AFFINE: tl.constexpr, BO: tl.constexpr,
                  BL: tl.constexpr, ACC: tl.constexpr):
    """What the mixing kernels share for a block of BO output channels: its
    rows ``o`` of P, the latent indices and masks, and both BatchNorms'
    ``(a, c)``."""
    o = block * BO + tl.arange(0, BO)
    o_in = o < CO
    lat = tl.arange(0, BL)
    l_in = lat < L
    tile = o_in[:, None] & l_in[None, :]
    p_tile = tl.load(p + o[:, None] * L + lat[None, :], mask=tile,
                     other=0).to(ACC)
    a1, c1 = _bn_affine(lat, l_in, mean1, var1, w1, b1, eps1, HAS_AFFINE,
                        ACC)
    a2, c2 = _bn_affine(lat, l_in, mean2, var2, w2, b2, eps2, HAS_AFFINE,
                        ACC)
    return o, o_in, lat, l_in, tile, p_tile, a1, c1, a2, c2


@triton.jit
def _phi_tile(phi, b, lat, l_in, L):
    """Phi(x) of sample b: (BL, BL)."""
    return tl.load(phi + (b * L + lat[:, None]) * L + lat[None, :],
                   mask=l_in[:, None] & l_in[None, :], other=0)


@triton.jit
def _latent_rows(mixing_a1, b, o, o_in, lat, CO, L):
    """``M diag(a1)`` of sample b at output channels ``o``: (BO, BL)."""
    return tl.load(mixing_a1 + (b * L + lat[None, :]) * CO + o[:, None],
                   mask=o_in[:, None] & (lat < L)[None, :], other=0)


@triton.jit
def _fold_operands(po, pc, w0, q, CO, CI, KK, L, CENTRE, BO: tl.constexpr,
                   BC: tl.constexpr, BT: tl.constexpr, BL: tl.constexpr,
                   ACC: tl.constexpr):
    """What the fold kernels share for the (BO, BC, BT) tile (po, pc): its
    indices, offsets and mask, its part of W0, Q's columns (BL, BC) and
    where the centre tap is."""
    o, c, t, offsets, mask = fold_tile(po, pc, CO, CI, KK, BO, BC, BT)
    lat = tl.arange(0, BL)
    static = tl.load(w0 + offsets, mask=mask, other=0).to(ACC)
    q_tile = tl.load(q + lat[:, None] * CI + c[None, :],
                     mask=(lat < L)[:, None] & (c < CI)[None, :], other=0)
    centre = (t == CENTRE)[None, None, :]
    return o, c, lat, offsets, mask, static, q_tile, centre


@triton.jit
def fold_fwd(phi, scale, p, q, w0, mean1, var1, w1, b1, eps1, mean2, var2, w2,
             b2, eps2, bias, out, bias_out, mixing, mixing_a1, B, CO, CI, KK,
             L, CENTRE, HAS_AFFINE: tl.constexpr, HAS_BIAS: tl.constexpr,
             SAVE: tl.constexpr, BO: tl.constexpr, BC: tl.constexpr,
             BT: tl.constexpr, BL: tl.constexpr, ACC: tl.constexpr):
    """Eq. 4 of the DCD paper with the BatchNorms as affine maps: per-sample
    weights ``Lambda W0`` plus ``M diag(a1) Q^T`` at the centre tap
    ``CENTRE``, where ``M = P + P diag(a2) Phi``, and biases ``M c1 + P c2
    (+ bias)``. Each program computes the rows of M of its output channels
    (L <= BL: a small product, cheaper than a kernel of its own); those of
    the first column store the biases and, with ``SAVE``, M (B, CO, L) and
    ``M diag(a1)`` transposed (B, L, CO) for the backward.
    Grid (cdiv(CO, BO), cdiv(CI, BC))."""
    po = tl.program_id(0)
    first_column = tl.program_id(1) == 0
    o, c, lat, offsets, mask, static, q_tile, centre = _fold_operands(
        po, tl.program_id(1), w0, q, CO, CI, KK, L, CENTRE, BO, BC, BT, BL,
        ACC)
    o, o_in, lat, l_in, tile, p_rows, a1, c1, a2, c2 = _mixing_block(
        po, p, mean1, var1, w1, b1, eps1, mean2, var2, w2, b2, eps2, CO, L,
        HAS_AFFINE, BO, BL, ACC)
    static_bias = tl.sum(p_rows * c2[None, :], axis=1)
    if HAS_BIAS:
        static_bias += tl.load(bias + o, mask=o_in, other=0).to(ACC)
    for b in range(B):
        rows = p_rows + matmul(p_rows * a2[None, :],
                               _phi_tile(phi, b, lat, l_in, L), ACC)
        rows_a1 = rows * a1[None, :]
        residual = matmul(rows_a1, q_tile, ACC)
        lam = tl.load(scale + b * CO + o, mask=o_in, other=0).to(ACC)
        weight = lam[:, None, None] * static + tl.where(
            centre, residual[:, :, None], 0.0)
        tl.store(out + b * CO * CI * KK + offsets, weight, mask=mask)
        if first_column:
            tl.store(bias_out + b * CO + o,
                     tl.sum(rows * c1[None, :], axis=1) + static_bias,
                     mask=o_in)
            if SAVE:
                tl.store(mixing + (b * CO + o[:, None]) * L + lat[None, :],
                         rows, mask=tile)
                tl.store(mixing_a1 + (b * L + lat[None, :]) * CO +
                         o[:, None], rows_a1, mask=tile)


# ---------------------------------------------------------------- backward
# With ``R`` the centre tap of the weights' gradient (B, CO, CI) and ``gb``
# that of the biases (B, CO): ``grad M = a1 (R Q^T) + gb c1^T``; Q, W0 and
# the heads' weights sum over the batch, P and the BatchNorms also over the
# output channels. Each sum over tiles goes through a partial per tile,
# added in a fixed order by the next kernel: no atomics.


@triton.jit
def fold_bwd(grad_w, scale, mixing_a1, q, w0, grad_w0, part_lam, part_m,
             part_q, B, CO, CI, KK, L, CENTRE, BO: tl.constexpr,
             BC: tl.constexpr, BT: tl.constexpr, BL: tl.constexpr,
             ACC: tl.constexpr):
    """From the weights' gradient, per (BO, BC, BT) tile: ``grad W0`` (the
    sum over samples of ``Lambda * grad``); the tile's share of ``grad
    Lambda`` (``part_lam`` (B, CT, CO)), of ``R Q^T`` (``part_m`` (B, CT,
    L, CO)) and of ``grad Q = diag(a1) M^T R`` (``part_q`` (B, RT, L,
    CI)). Grid (RT, CT) = (cdiv(CO, BO), cdiv(CI, BC))."""
    po = tl.program_id(0)
    pc = tl.program_id(1)
    row_tiles = tl.num_programs(0)
    col_tiles = tl.num_programs(1)
    o, c, lat, offsets, mask, static, q_tile, centre = _fold_operands(
        po, pc, w0, q, CO, CI, KK, L, CENTRE, BO, BC, BT, BL, ACC)
    o_in = o < CO
    c_in = c < CI
    l_in = lat < L
    acc_w0 = tl.zeros([BO, BC, BT], ACC)
    for b in range(B):
        grad = tl.load(grad_w + b * CO * CI * KK + offsets, mask=mask,
                       other=0).to(ACC)
        lam = tl.load(scale + b * CO + o, mask=o_in, other=0).to(ACC)
        acc_w0 += lam[:, None, None] * grad
        tl.store(part_lam + (b * col_tiles + pc) * CO + o,
                 tl.sum(tl.sum(static * grad, axis=2), axis=1), mask=o_in)
        r = tl.sum(tl.where(centre, grad, 0.0), axis=2)
        tl.store(part_m + ((b * col_tiles + pc) * L + lat[None, :]) * CO +
                 o[:, None], matmul(r, tl.trans(q_tile), ACC),
                 mask=o_in[:, None] & l_in[None, :])
        m_rows = _latent_rows(mixing_a1, b, o, o_in, lat, CO, L)
        tl.store(part_q + ((b * row_tiles + po) * L + lat[:, None]) * CI +
                 c[None, :], matmul(tl.trans(m_rows), r, ACC),
                 mask=l_in[:, None] & c_in[None, :])
    tl.store(grad_w0 + offsets, acc_w0, mask=mask)


@triton.jit
def mixing_bwd(grad_bias, part_lam, part_m, scale_logits, mixing, phi, p,
               mean1, var1, w1, b1, eps1, mean2, var2, w2, b2, eps2,
               grad_lam_logits, grad_p, grad_layer_bias, part_phi, part_bn,
               B, CO, L, CT, temperature, HAS_AFFINE: tl.constexpr,
               HAS_BIAS: tl.constexpr, BO: tl.constexpr, BL: tl.constexpr,
               BP: tl.constexpr, ACC: tl.constexpr):
    """Per block of BO output channels: the gradient of Lambda's logits
    (B, CO), of P and of the layer's bias; the block's share of ``grad
    Phi`` before ``diag(a2)`` (``part_phi`` (MT, B, L, L)) and of the
    BatchNorms' ``a1, c1, a2, c2`` (``part_bn`` (MT, 4, L)). Grid (MT) =
    (cdiv(CO, BO))."""
    pid = tl.program_id(0)
    o, o_in, lat, l_in, tile, p_tile, a1, c1, a2, c2 = _mixing_block(
        pid, p, mean1, var1, w1, b1, eps1, mean2, var2, w2, b2, eps2, CO, L,
        HAS_AFFINE, BO, BL, ACC)
    grad_m_sum = tl.zeros([BO, BL], ACC)
    # Y[o, k] = sum over samples and l of grad M[o, l] Phi[k, l]
    y = tl.zeros([BO, BL], ACC)
    grad_a1 = tl.zeros([BL], ACC)
    grad_c1 = tl.zeros([BL], ACC)
    bias_sum = tl.zeros([BO], ACC)
    for b in range(B):
        gb = tl.load(grad_bias + b * CO + o, mask=o_in, other=0).to(ACC)
        bias_sum += gb
        grad_lam = sum_of_parts(part_lam + b * CT * CO, CT, CO, o, o_in, BP,
                                ACC)
        rq = sum_of_parts_2d(part_m + b * CT * L * CO, CT, L * CO,
                             lat[None, :] * CO + o[:, None], tile, BP, ACC)
        logits = tl.load(scale_logits + b * CO + o, mask=o_in,
                         other=0).to(ACC)
        grad_lam = _hard_sigmoid_grad(logits, grad_lam) / temperature
        tl.store(grad_lam_logits + b * CO + o, grad_lam, mask=o_in)
        m_tile = tl.load(mixing + (b * CO + o[:, None]) * L + lat[None, :],
                         mask=tile, other=0).to(ACC)
        grad_a1 += tl.sum(m_tile * rq, axis=0)
        grad_c1 += tl.sum(m_tile * gb[:, None], axis=0)
        grad_m = a1[None, :] * rq + gb[:, None] * c1[None, :]
        grad_m_sum += grad_m
        y += matmul(grad_m, tl.trans(_phi_tile(phi, b, lat, l_in, L)), ACC)
        tl.store(part_phi + ((pid * B + b) * L + lat[:, None]) * L +
                 lat[None, :], matmul(tl.trans(p_tile), grad_m, ACC),
                 mask=l_in[:, None] & l_in[None, :])
    tl.store(grad_p + o[:, None] * L + lat[None, :],
             grad_m_sum + a2[None, :] * y + c2[None, :] * bias_sum[:, None],
             mask=tile)
    tl.store(part_bn + (pid * 4 + 0) * L + lat, grad_a1, mask=l_in)
    tl.store(part_bn + (pid * 4 + 1) * L + lat, grad_c1, mask=l_in)
    tl.store(part_bn + (pid * 4 + 2) * L + lat, tl.sum(p_tile * y, axis=0),
             mask=l_in)
    tl.store(part_bn + (pid * 4 + 3) * L + lat,
             tl.sum(p_tile * bias_sum[:, None], axis=0), mask=l_in)
    if HAS_BIAS:
        tl.store(grad_layer_bias + o, bias_sum, mask=o_in)


@triton.jit
def heads_bwd(part_phi, grad_lam_logits, hidden, w_phi, w_scale, part_q,
              part_bn, mean1, var1, w1, b1, eps1, mean2, var2, w2, b2, eps2,
              grad_w_phi, grad_w_scale, part_h, grad_q, grad_bn, B, S, L, CO,
              CI, MT, RT, NH, NQ, temperature, HAS_AFFINE: tl.constexpr,
              BJ: tl.constexpr, BS: tl.constexpr, BL: tl.constexpr,
              BQ: tl.constexpr, BP: tl.constexpr, ACC: tl.constexpr):
    """Three kinds of program. The first NH take BJ rows of the stacked
    heads (``fc_phi``'s L * L, then ``fc_scale``'s CO): their weights'
    gradient and their share of ``grad hidden`` (``part_h`` (NH, B, S)).
    The next NQ take BQ columns of ``grad Q``, the sum of ``part_q``. The
    last (with affine BatchNorms) the gradients of the BatchNorms' weights
    and biases (``grad_bn`` (4, L): bn1's, then bn2's). Grid (NH + NQ +
    HAS_AFFINE)."""
    pid = tl.program_id(0)
    LL = L * L
    if pid < NH:
        s = tl.arange(0, BS)
        s_in = s < S
        in_phi, in_scale, rows_phi, rows_scale, w = _stacked_head_rows(
            pid, s, s_in, w_phi, w_scale, S, LL, CO, BJ, ACC)
        a2, _ = _bn_affine(rows_phi // L, in_phi, mean2, var2, w2, b2, eps2,
                           HAS_AFFINE, ACC)
        grad_w = tl.zeros([BJ, BS], ACC)
        for b in range(B):
            grad_phi = sum_of_parts(part_phi + b * LL, MT, B * LL, rows_phi,
                                    in_phi, BP, ACC)
            grad_logits = tl.where(in_phi, grad_phi * a2 / temperature, 0.0)
            grad_logits += tl.load(grad_lam_logits + b * CO + rows_scale,
                                   mask=in_scale, other=0).to(ACC)
            hid = tl.load(hidden + b * S + s, mask=s_in, other=0).to(ACC)
            grad_w += grad_logits[:, None] * hid[None, :]
            tl.store(part_h + (pid * B + b) * S + s,
                     tl.sum(w * grad_logits[:, None], axis=0), mask=s_in)
        tl.store(grad_w_phi + rows_phi[:, None] * S + s[None, :], grad_w,
                 mask=in_phi[:, None] & s_in[None, :])
        tl.store(grad_w_scale + rows_scale[:, None] * S + s[None, :], grad_w,
                 mask=in_scale[:, None] & s_in[None, :])
    elif pid < NH + NQ:
        c = (pid - NH) * BQ + tl.arange(0, BQ)
        lat = tl.arange(0, BL)
        tile = (lat < L)[:, None] & (c < CI)[None, :]
        acc = sum_of_parts_2d(part_q, B * RT, L * CI,
                              lat[:, None] * CI + c[None, :], tile, BP, ACC)
        tl.store(grad_q + lat[:, None] * CI + c[None, :], acc, mask=tile)
    else:
        lat = tl.arange(0, BL)
        l_in = lat < L
        grad_a1 = sum_of_parts(part_bn, MT, 4 * L, lat, l_in, BP, ACC)
        grad_c1 = sum_of_parts(part_bn + L, MT, 4 * L, lat, l_in, BP, ACC)
        grad_a2 = sum_of_parts(part_bn + 2 * L, MT, 4 * L, lat, l_in, BP, ACC)
        grad_c2 = sum_of_parts(part_bn + 3 * L, MT, 4 * L, lat, l_in, BP, ACC)
        _bn_param_grads(grad_a1, grad_c1, mean1, var1, eps1, grad_bn, L,
                        lat, l_in, ACC)
        _bn_param_grads(grad_a2, grad_c2, mean2, var2, eps2, grad_bn + 2 * L,
                        L, lat, l_in, ACC)


@triton.jit
def _bn_param_grads(grad_a, grad_c, mean, var, eps, out, L, lat, l_in,
                    ACC: tl.constexpr):
    """Gradients of a BatchNorm's weight and bias (stored at ``out`` and
    ``out + L``) from those of its affine map, ``a = w / sqrt(var +
    eps)``, ``c = bias - mean * a``."""
    rstd = 1.0 / tl.sqrt(tl.load(var + lat, mask=l_in, other=1).to(ACC) + eps)
    mu = tl.load(mean + lat, mask=l_in, other=0).to(ACC)
    tl.store(out + lat, (grad_a - mu * grad_c) * rstd, mask=l_in)
    tl.store(out + L + lat, grad_c, mask=l_in)


@triton.jit
def _hidden_grads(part_h, NH, gate, squeezed, b, B, S, s, s_in,
                  ACC: tl.constexpr):
    """At rows ``s`` of sample b: ``grad y`` through the product of ``hidden
    = y * g(G y)`` (``grad hidden * g``) and the gradient of the gate's
    logits (``grad hidden * y * g'``)."""
    grad_hidden = sum_of_parts(part_h + b * S, NH, B * S, s, s_in, 8, ACC)
    logits = tl.load(gate + b * S + s, mask=s_in, other=0).to(ACC)
    y = tl.load(squeezed + b * S + s, mask=s_in, other=0).to(ACC)
    return (grad_hidden * _hard_sigmoid_gate(logits),
            _hard_sigmoid_grad(logits, grad_hidden * y))


@triton.jit
def hidden_bwd(part_h, NH, gate, squeezed, pooled, hw, w_gate, w_in,
               grad_w_gate, grad_w_in, grad_pooled, B, S, C, NC,
               BS: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
               ACC: tl.constexpr):
    """The squeeze gate and ``fc[0]`` backward. The first NC programs take
    BC columns of ``fc[0]``: its weight's gradient and that of the pooled
    sums (B, C); each first computes ``grad y`` (B, S) whole, S <= BS. The
    others take BR rows of the gate's weight. Grid (NC + cdiv(S, BR))."""
    pid = tl.program_id(0)
    s = tl.arange(0, BS)
    s_in = s < S
    if pid < NC:
        c = pid * BC + tl.arange(0, BC)
        c_in = c < C
        w_cols = tl.load(w_in + s[:, None] * C + c[None, :],
                         mask=s_in[:, None] & c_in[None, :], other=0).to(ACC)
        grad_cols = tl.zeros([BS, BC], ACC)
        for b in range(B):
            grad_y, grad_gate_all = _hidden_grads(part_h, NH, gate, squeezed,
                                                  b, B, S, s, s_in, ACC)
            for r0 in range(0, S, BR):
                r = r0 + tl.arange(0, BR)
                r_in = r < S
                grad_y_rows, grad_gate = _hidden_grads(
                    part_h, NH, gate, squeezed, b, B, S, r, r_in, ACC)
                g_rows = tl.load(w_gate + r[:, None] * S + s[None, :],
                                 mask=r_in[:, None] & s_in[None, :],
                                 other=0).to(ACC)
                grad_y += tl.sum(g_rows * grad_gate[:, None], axis=0)
            mean = tl.load(pooled + b * C + c, mask=c_in, other=0).to(ACC) / hw
            grad_cols += grad_y[:, None] * mean[None, :]
            tl.store(grad_pooled + b * C + c,
                     tl.sum(w_cols * grad_y[:, None], axis=0) / hw, mask=c_in)
        tl.store(grad_w_in + s[:, None] * C + c[None, :], grad_cols,
                 mask=s_in[:, None] & c_in[None, :])
    else:
        rows = (pid - NC) * BR + tl.arange(0, BR)
        rows_in = rows < S
        grad_rows = tl.zeros([BR, BS], ACC)
        for b in range(B):
            grad_y_rows, grad_gate = _hidden_grads(
                part_h, NH, gate, squeezed, b, B, S, rows, rows_in, ACC)
            y = tl.load(squeezed + b * S + s, mask=s_in, other=0).to(ACC)
            grad_rows += grad_gate[:, None] * y[None, :]
        tl.store(grad_w_gate + rows[:, None] * S + s[None, :], grad_rows,
                 mask=rows_in[:, None] & s_in[None, :])
