"""Triton kernels of DCD's fused inference path (see
:mod:`mmdyn.layers.dcd_fused`, which launches them).

Shapes, B the batch: ``pooled`` (B, C) sums of the input over H and W;
``squeezed`` (B, S) the first product of the dynamic branch; ``phi`` (B, L,
L) and ``scale`` (B, CO): Phi(x) and Lambda(x); ``mixing`` (B, CO, L):
``M = P (diag(a2) Phi + I)``; the static kernel ``W0`` (CO, CI, KK) and the
per-sample kernels (B, CO, CI, KK). The BatchNorms ``bn1`` and ``bn2`` are
affine maps ``a * v + c`` of their running statistics, computed here from
their parameters. Accumulation is in ``ACC`` (float32, or float64 for
float64 inputs).
"""
import triton
import triton.language as tl

from .triton_blocks import rows_times_vector


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
def squeeze_fwd(pooled, hw, w_in, out, C, S, BS: tl.constexpr,
                BC: tl.constexpr, ACC: tl.constexpr):
    """``fc[0]`` on the pooled mean: (B, S). Grid (B, cdiv(S, BS))."""
    b = tl.program_id(0)
    s = tl.program_id(1) * BS + tl.arange(0, BS)
    s_in = s < S
    acc = rows_times_vector(w_in, s, s_in, pooled + b * C, C, BS, BC, ACC)
    tl.store(out + b * S + s, acc / hw, mask=s_in)


@triton.jit
def heads_fwd(squeezed, w_gate, w_phi, w_scale, phi, scale, S, LL, CO,
              temperature, BJ: tl.constexpr, BS: tl.constexpr,
              BG: tl.constexpr, ACC: tl.constexpr):
    """The squeeze gate (``hidden = y * gate(W y)``), then rows of
    ``fc_phi`` (Phi(x), divided by the temperature) and ``fc_scale``
    (Lambda(x), gated). Each program recomputes ``hidden`` (S <= BS).
    Grid (B, cdiv(LL + CO, BJ))."""
    b = tl.program_id(0)
    s = tl.arange(0, BS)
    s_in = s < S
    gate = rows_times_vector(w_gate, s, s_in, squeezed + b * S, S, BS, BG,
                             ACC)
    hidden = tl.load(squeezed + b * S + s, mask=s_in, other=0).to(ACC) * \
        _hard_sigmoid_gate(gate)
    j = tl.program_id(1) * BJ + tl.arange(0, BJ)
    in_phi = j < LL
    in_scale = (j >= LL) & (j < LL + CO)
    rows_phi = tl.where(in_phi, j, 0)
    rows_scale = tl.where(in_scale, j - LL, 0)
    w = tl.load(w_phi + rows_phi[:, None] * S + s[None, :],
                mask=in_phi[:, None] & s_in[None, :], other=0).to(ACC)
    w += tl.load(w_scale + rows_scale[:, None] * S + s[None, :],
                 mask=in_scale[:, None] & s_in[None, :], other=0).to(ACC)
    logits = tl.sum(w * hidden[None, :], axis=1) / temperature
    tl.store(phi + b * LL + rows_phi, logits, mask=in_phi)
    tl.store(scale + b * CO + rows_scale, _hard_sigmoid_gate(logits),
             mask=in_scale)


@triton.jit
def mixing_fwd(phi, p, mean1, var1, w1, b1, eps1, mean2, var2, w2, b2, eps2,
               bias, mixing, bias_out, CO, L, HAS_AFFINE: tl.constexpr,
               HAS_BIAS: tl.constexpr, BO: tl.constexpr, BL: tl.constexpr,
               ACC: tl.constexpr):
    """``M = P + P diag(a2) Phi`` (B, CO, L) and the per-sample bias ``M c1
    + P c2 (+ bias)`` (B, CO): Eq. 4 of the DCD paper with the BatchNorms
    as affine maps. L <= BL. Grid (B, cdiv(CO, BO))."""
    b = tl.program_id(0)
    o = tl.program_id(1) * BO + tl.arange(0, BO)
    o_in = o < CO
    lat = tl.arange(0, BL)
    l_in = lat < L
    tile = o_in[:, None] & l_in[None, :]
    p_rows = tl.load(p + o[:, None] * L + lat[None, :], mask=tile,
                     other=0).to(ACC)
    acc = p_rows
    for k in range(0, L):
        a2, _ = _bn_affine(k, k < L, mean2, var2, w2, b2, eps2, HAS_AFFINE,
                           ACC)
        p_k = tl.load(p + o * L + k, mask=o_in, other=0).to(ACC)
        phi_k = tl.load(phi + (b * L + k) * L + lat, mask=l_in,
                        other=0).to(ACC)
        acc += (p_k * a2)[:, None] * phi_k[None, :]
    tl.store(mixing + (b * CO + o[:, None]) * L + lat[None, :], acc,
             mask=tile)
    _, c1 = _bn_affine(lat, l_in, mean1, var1, w1, b1, eps1, HAS_AFFINE, ACC)
    _, c2 = _bn_affine(lat, l_in, mean2, var2, w2, b2, eps2, HAS_AFFINE, ACC)
    out = tl.sum(acc * c1[None, :] + p_rows * c2[None, :], axis=1)
    if HAS_BIAS:
        out += tl.load(bias + o, mask=o_in, other=0).to(ACC)
    tl.store(bias_out + b * CO + o, out, mask=o_in)


@triton.jit
def fold_fwd(mixing, scale, q, mean1, var1, w1, b1, eps1, w0, out, B, CO,
             CI, KK, L, CENTRE, HAS_AFFINE: tl.constexpr, BO: tl.constexpr,
             BC: tl.constexpr, BT: tl.constexpr, ACC: tl.constexpr):
    """Per-sample kernels ``Lambda W0`` plus ``M diag(a1) Q^T`` at the
    centre tap ``CENTRE``. Grid (cdiv(CO, BO), cdiv(CI, BC))."""
    o = tl.program_id(0) * BO + tl.arange(0, BO)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    t = tl.arange(0, BT)
    o_in = o < CO
    c_in = c < CI
    offsets = (o[:, None, None] * CI + c[None, :, None]) * KK + \
        t[None, None, :]
    mask = o_in[:, None, None] & c_in[None, :, None] & \
        (t < KK)[None, None, :]
    static = tl.load(w0 + offsets, mask=mask, other=0).to(ACC)
    centre = (t == CENTRE)[None, None, :]
    for b in range(B):
        residual = tl.zeros([BO, BC], ACC)
        for k in range(0, L):
            a1, _ = _bn_affine(k, k < L, mean1, var1, w1, b1, eps1,
                               HAS_AFFINE, ACC)
            m_k = tl.load(mixing + (b * CO + o) * L + k, mask=o_in,
                          other=0).to(ACC)
            q_k = tl.load(q + k * CI + c, mask=c_in, other=0).to(ACC)
            residual += m_k[:, None] * (a1 * q_k)[None, :]
        lam = tl.load(scale + b * CO + o, mask=o_in, other=0).to(ACC)
        kernel = lam[:, None, None] * static + tl.where(
            centre, residual[:, :, None], 0.0)
        tl.store(out + b * CO * CI * KK + offsets, kernel, mask=mask)
