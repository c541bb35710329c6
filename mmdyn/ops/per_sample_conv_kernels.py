"""Triton kernels of the per-sample convolution (see
:mod:`mmdyn.ops.per_sample_conv`, which launches them, and
:mod:`mmdyn.ops.scaled_weight_conv` and :mod:`mmdyn.ops.dcd_conv`, which
launch the forward with shared weights and per-sample terms).

Each is an implicit GEMM over one sample: the sample's pixels times its own
weights, the taps of the filter gathered from the input by index (no
unfolded copy). Shapes, for sample ``b``: input ``x`` (C, H, W), weights
``w`` (CO, C, TAPS) with ``TAPS = KH * KW`` taps ``t = kh * KW + kw``, output
``y`` (CO, OH, OW). Tensors are addressed by their strides, so NCHW and
channels-last inputs are read in place. Products accumulate in float32 (or
float64 for float64 inputs, in the interpreter); float32 operands go
through TF32 where ``TF32`` is set.

A map whose rows are W pixels apart (as NCHW and channels-last tensors
are) is addressed by its flat pixel index, ``p * stride_p``, instead of
``(p // W) * stride_h + (p % W) * stride_w``: that is what lets the
compiler see that a tile's pixels are adjacent in an NCHW tensor and load
or store them as vectors. A gathered tap (``FLAT`` unset) reads scattered
pixels, which are vectors only along channels-last channels.
"""
import triton
import triton.language as tl

from .triton_blocks import write_block_output


@triton.jit
def _dot(a, b, TF32: tl.constexpr, ACC: tl.constexpr):
    if TF32:
        return tl.dot(a, b, input_precision='tf32', out_dtype=ACC)
    return tl.dot(a, b, input_precision='ieee', out_dtype=ACC)


@triton.jit
def conv_fwd(x, w, chan, tap, filt, bias, q, lr_m, lr_c, lr_p, norm_s,
             norm_h, res, y, sums, C, H, W, CO, OH, OW, NP, L, stride_xb,
             stride_xc, stride_xh, stride_xw, stride_wb, stride_wo,
             stride_wc, stride_wt, stride_yb, stride_yc, stride_yp,
             stride_rb, stride_rc, stride_rp, stride_cb, stride_tb,
             stride_fb, SH, SW, PH, PW, DH, DW,
             KW: tl.constexpr, TAPS: tl.constexpr, FLAT: tl.constexpr,
             HAS_CHAN: tl.constexpr,
             HAS_TAP: tl.constexpr, HAS_FILT: tl.constexpr,
             HAS_BIAS: tl.constexpr,
             LOW_RANK: tl.constexpr, LP: tl.constexpr, TC: tl.constexpr,
             HAS_NORM: tl.constexpr, HAS_RES: tl.constexpr,
             RELU: tl.constexpr, RELU_CAP: tl.constexpr,
             SUMS: tl.constexpr, TF32: tl.constexpr, BM: tl.constexpr,
             BN: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    """``y[o, p] = filt[o] sum_{c, t} w'[o, c, t] x[c, p shifted by tap t]
    (+ r[o, p]) (+ bias[o])`` for a (BM output pixels, BN output channels)
    tile, each term and factor only where its flag is set:

    - the sample's weights ``w'[o, c, t] = chan[c] tap[t] w[o, c, t]``,
      each weight tile scaled as it is read. The per-sample
      conv passes each sample's own weights (``stride_wb``) and no factor;
      weights shared by the samples have ``stride_wb = 0``. Taps are
      ``stride_wt`` apart: 1 where the weights are contiguous, C where
      they are channels-last;
    - ``LOW_RANK``: the residual ``r = lr_p (lr_m z + lr_c)`` through an
      L-dimensional latent space, ``z[l, p] = sum_c q[l, c] x[c, p shifted
      by tap TC]`` (DCD's ``P Phi(x) Q^T`` on the centre tap, Eq. 4 of the
      DCD paper), gathered while the product runs over tap TC;
    - the attentions ``chan`` (B, C), ``tap`` (B, TAPS) and ``filt`` (B,
      CO) have rows ``stride_cb``, ``stride_tb``, ``stride_fb`` apart (views
      of one tensor of gates, or each its own), each row contiguous;
      ``bias`` (B, CO), ``q`` (L, C), ``lr_m`` (B, L, L), ``lr_c`` (B, L)
      and ``lr_p`` (CO, L) are contiguous; ``LP`` is L rounded
      up to a power of two, at least 16;
    - the block's operations after the conv, at inference (``HAS_NORM``,
      ``HAS_RES``, ``RELU``, ``RELU_CAP``), and the output's pixel sums
      for the next layer's attention (``SUMS``), as
      :func:`~mmdyn.ops.triton_blocks.write_block_output` applies them;
      ``res`` (B, CO, OH, OW) has strides ``stride_rb``, ``stride_rc``,
      ``stride_rp`` as ``y``'s.

    ``NP = OH * OW``; ``FLAT``: output pixel ``p`` reads input pixel ``p``
    (a 1x1 filter, stride 1, no padding, the input's rows ``W *
    stride_xw`` apart); ``y``'s rows are ``OW * stride_yp`` apart.

    Grid (cdiv(NP, BM), cdiv(CO, BN), B)."""
    b = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BM + tl.arange(0, BM)
    o = tl.program_id(1) * BN + tl.arange(0, BN)
    p_in = p < NP
    o_in = o < CO
    oh = p // OW
    ow = p % OW
    xb = x + b * stride_xb
    wb = w + b * stride_wb
    acc = tl.zeros([BM, BN], ACC)
    lat = tl.arange(0, LP)
    lat_in = lat < L
    z = tl.zeros([BM, LP], ACC)
    # one flat loop over (input-channel block, tap): the taps of a block
    # read overlapping windows of the input and adjacent weights
    for step in range(0, tl.cdiv(C, BK) * TAPS):
        c = (step // TAPS) * BK + tl.arange(0, BK)
        t = step % TAPS
        if FLAT:
            pixels = p * stride_xw
            inside = p_in
        else:
            ih = oh * SH - PH + (t // KW) * DH
            iw = ow * SW - PW + (t % KW) * DW
            inside = p_in & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            pixels = ih * stride_xh + iw * stride_xw
        c_in = c < C
        a = tl.load(xb + pixels[:, None] + c[None, :] * stride_xc,
                    mask=inside[:, None] & c_in[None, :],
                    other=0)
        if LOW_RANK:
            if t == TC:
                q_tile = tl.load(q + lat[None, :] * C + c[:, None],
                                 mask=c_in[:, None] & lat_in[None, :],
                                 other=0)
                z += _dot(a, q_tile.to(a.dtype), TF32, ACC)
        k = tl.load(wb + o[None, :] * stride_wo + c[:, None] * stride_wc +
                    t * stride_wt,
                    mask=c_in[:, None] & o_in[None, :],
                    other=0)
        if HAS_CHAN or HAS_TAP:
            # the sample's scales of this tap and channel block, formed in
            # the accumulator's precision and applied to the weight tile in
            # the tile's own dtype, so the tile is not converted twice
            s = tl.full([BK], 1, ACC)
            if HAS_CHAN:
                s = s * tl.load(chan + b * stride_cb + c, mask=c_in,
                                other=0).to(ACC)
            if HAS_TAP:
                s = s * tl.load(tap + b * stride_tb + t).to(ACC)
            k = k * s.to(k.dtype)[:, None]
        acc += _dot(a, k.to(a.dtype), TF32, ACC)
    if HAS_FILT:
        acc *= tl.load(filt + b * stride_fb + o, mask=o_in,
                       other=0).to(ACC)[None, :]
    if LOW_RANK:
        # u[p, l] = sum_j z[p, j] m[l, j] + c[l]; then r = u P^T
        m = tl.load(lr_m + b * L * L + lat[None, :] * L + lat[:, None],
                    mask=lat_in[:, None] & lat_in[None, :], other=0)
        u = _dot(z.to(x.dtype.element_ty), m.to(x.dtype.element_ty), TF32,
                 ACC) + tl.load(
            lr_c + b * L + lat, mask=lat_in, other=0).to(ACC)[None, :]
        p_tile = tl.load(lr_p + o[None, :] * L + lat[:, None],
                         mask=lat_in[:, None] & o_in[None, :], other=0)
        acc += _dot(u.to(x.dtype.element_ty), p_tile.to(x.dtype.element_ty),
                    TF32, ACC)
    if HAS_BIAS:
        acc += tl.load(bias + b * CO + o, mask=o_in, other=0).to(ACC)[None, :]
    write_block_output(acc, b, p, p_in, o, o_in, norm_s, norm_h, res,
                       stride_rb, stride_rc, stride_rp, y, stride_yb,
                       stride_yc, stride_yp, sums, CO, HAS_NORM, HAS_RES,
                       RELU, RELU_CAP, SUMS, ACC)


@triton.jit
def conv_bwd_input(gy, w, gx, C, H, W, CO, OH, OW, NQ, stride_gb, stride_gc,
                   stride_gh, stride_gw, stride_wb, stride_wo, stride_wc,
                   stride_wt, stride_xb, stride_xc, stride_xp, SH, SW, PH, PW,
                   DH, DW, KW: tl.constexpr, TAPS: tl.constexpr,
                   FLAT: tl.constexpr, TF32: tl.constexpr, BM: tl.constexpr,
                   BN: tl.constexpr, BK: tl.constexpr, ACC: tl.constexpr):
    """``gx[c, q] = sum_{o, t} w[o, c, t] gy[o, p]`` over the output pixels
    ``p`` whose tap ``t`` reads input pixel ``q``, for a (BM input pixels,
    BN input channels) tile. ``NQ = H * W``; ``FLAT``: ``p = q`` (a 1x1
    filter, stride 1, no padding, ``gy``'s rows ``OW * stride_gw``
    apart); ``gx``'s rows are ``W * stride_xp`` apart. Grid (cdiv(NQ, BM),
    cdiv(C, BN), B)."""
    b = tl.program_id(2).to(tl.int64)
    q = tl.program_id(0) * BM + tl.arange(0, BM)
    c = tl.program_id(1) * BN + tl.arange(0, BN)
    q_in = q < NQ
    c_in = c < C
    ih = q // W
    iw = q % W
    gyb = gy + b * stride_gb
    wb = w + b * stride_wb
    acc = tl.zeros([BM, BN], ACC)
    for step in range(0, tl.cdiv(CO, BK) * TAPS):
        o = (step // TAPS) * BK + tl.arange(0, BK)
        t = step % TAPS
        if FLAT:
            pixels = q * stride_gw
            hit = q_in
        else:
            # the output pixel whose tap t reads (ih, iw), where there is one
            rows = ih + PH - (t // KW) * DH
            cols = iw + PW - (t % KW) * DW
            oh = rows // SH
            ow = cols // SW
            hit = q_in & (rows >= 0) & (cols >= 0) & (rows % SH == 0) & \
                (cols % SW == 0) & (oh < OH) & (ow < OW)
            pixels = oh * stride_gh + ow * stride_gw
        o_in = o < CO
        a = tl.load(gyb + pixels[:, None] + o[None, :] * stride_gc,
                    mask=hit[:, None] & o_in[None, :],
                    other=0)
        k = tl.load(wb + o[:, None] * stride_wo + c[None, :] * stride_wc +
                    t * stride_wt,
                    mask=o_in[:, None] & c_in[None, :],
                    other=0)
        acc += _dot(a, k, TF32, ACC)
    tl.store(gx + b * stride_xb + q[:, None] * stride_xp +
             c[None, :] * stride_xc,
             acc.to(gx.dtype.element_ty),
             mask=q_in[:, None] & c_in[None, :])


@triton.jit
def conv_bwd_weights(gy, x, parts, C, H, W, CO, OH, OW, NP, stride_gb,
                     stride_gc, stride_gp, stride_xb, stride_xc, stride_xh,
                     stride_xw, stride_po, stride_pc, stride_pt, SH, SW, PH,
                     PW, DH, DW, B, BLOCKS_PER_PART,
                     KW: tl.constexpr, TAPS: tl.constexpr, FLAT: tl.constexpr,
                     TF32: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     BK: tl.constexpr, ACC: tl.constexpr):
    """One part of ``gw[o, c, t] = sum_p gy[o, p] x[c, p shifted by tap
    t]``: the sum over output pixels ``[part * BLOCKS_PER_PART * BK, (part +
    1) * BLOCKS_PER_PART * BK)``, for a (BM output channels, BN input
    channels) tile of one tap, written to ``parts[part, b]`` (B, CO, C,
    TAPS), each sample's block contiguous and addressed within by the
    strides ``stride_po``, ``stride_pc``, ``stride_pt``; the caller adds the
    parts in order. ``NP = OH * OW``, ``gy``'s rows are ``OW * stride_gp``
    apart; ``FLAT``: output pixel ``p`` reads input pixel ``p`` (as in
    :func:`conv_fwd`). Grid (cdiv(CO, BM) * cdiv(C, BN), TAPS,
    B * parts)."""
    tiles_c = tl.cdiv(C, BN)
    o = (tl.program_id(0) // tiles_c) * BM + tl.arange(0, BM)
    c = (tl.program_id(0) % tiles_c) * BN + tl.arange(0, BN)
    t = tl.program_id(1)
    b = (tl.program_id(2) % B).to(tl.int64)
    part = tl.program_id(2) // B
    o_in = o < CO
    c_in = c < C
    dh = (t // KW) * DH - PH
    dw = (t % KW) * DW - PW
    gyb = gy + b * stride_gb
    xb = x + b * stride_xb
    acc = tl.zeros([BM, BN], ACC)
    first = part * BLOCKS_PER_PART * BK
    for p0 in range(first, first + BLOCKS_PER_PART * BK, BK):
        p = p0 + tl.arange(0, BK)
        p_in = p < NP
        if FLAT:
            pixels = p * stride_xw
            inside = p_in
        else:
            oh = p // OW
            ow = p % OW
            ih = oh * SH + dh
            iw = ow * SW + dw
            inside = p_in & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            pixels = ih * stride_xh + iw * stride_xw
        g = tl.load(gyb + o[:, None] * stride_gc + p[None, :] * stride_gp,
                    mask=o_in[:, None] & p_in[None, :],
                    other=0)
        a = tl.load(xb + pixels[:, None] + c[None, :] * stride_xc,
                    mask=inside[:, None] & c_in[None, :],
                    other=0)
        acc += _dot(g, a, TF32, ACC)
    out = parts + ((part * B + b) * CO * C * TAPS + t * stride_pt)
    tl.store(out + o[:, None] * stride_po + c[None, :] * stride_pc,
             acc,
             mask=o_in[:, None] & c_in[None, :])
