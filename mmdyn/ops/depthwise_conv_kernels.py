"""Triton kernel of the per-sample depthwise convolution at inference (see
:mod:`mmdyn.ops.depthwise_conv`, which launches it).

Each output channel reads only its own input channel, so there is no
product to tile: every program takes a (BP output pixels, BC channels)
tile of one sample, adds up its taps one by one, each tap's weight that
sample's own, and applies the block's operations as it writes the output.
Shapes, for sample ``b``: input ``x`` (C, H, W), weights ``w`` (C, TAPS)
with ``TAPS = KH * KW`` taps ``t = kh * KW + kw``, output ``y`` (C, OH,
OW). Tensors are addressed by their strides, so NCHW and channels-last
inputs are read in place (channels-last: a tile's channels are adjacent,
and load as vectors); sums are taken in float32 (float64 for float64
inputs, in the interpreter).
"""
import triton
import triton.language as tl

from .triton_blocks import write_block_output


@triton.jit
def depthwise_fwd(x, w, chan, tap, bias, norm_s, norm_h, res, y, sums, C, H,
                  W, OH, OW, NP, stride_xb, stride_xc, stride_xh, stride_xw,
                  stride_wb, stride_wc, stride_yb, stride_yc, stride_yp,
                  stride_rb, stride_rc, stride_rp, stride_cb, stride_tb,
                  SH, SW, PH, PW, DH, DW,
                  KW: tl.constexpr, TAPS: tl.constexpr,
                  HAS_CHAN: tl.constexpr, HAS_TAP: tl.constexpr,
                  HAS_BIAS: tl.constexpr, HAS_NORM: tl.constexpr,
                  HAS_RES: tl.constexpr, RELU: tl.constexpr,
                  RELU_CAP: tl.constexpr, SUMS: tl.constexpr,
                  BP: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr):
    """``y[c, p] = sum_t w[c, t] x[c, p shifted by tap t] (+ bias[c])``
    for a (BP output pixels, BC channels) tile of sample ``b``, the
    sample's weights ``w`` (B, C, TAPS), its taps contiguous, or weights
    shared by the samples (``stride_wb = 0``) scaled per sample as they are
    read, ``w'[c, t] = chan[c] tap[t] w[c, t]`` where ``HAS_CHAN`` and
    ``HAS_TAP`` are set (ODConv's channel and spatial attentions, ``chan``
    (B, C) and ``tap`` (B, TAPS), rows ``stride_cb`` and ``stride_tb``
    apart, each row contiguous); then the block's operations and the
    output's pixel sums, each where its flag is set, as
    :func:`~mmdyn.ops.triton_blocks.write_block_output` applies them.
    ``bias`` is (B, C), contiguous; ``NP = OH * OW``; ``y``'s and
    ``res``'s rows are ``OW`` pixels apart. Grid (cdiv(NP, BP),
    cdiv(C, BC), B)."""
    b = tl.program_id(2).to(tl.int64)
    p = tl.program_id(0) * BP + tl.arange(0, BP)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    p_in = p < NP
    c_in = c < C
    oh = p // OW
    ow = p % OW
    xb = x + b * stride_xb + c[None, :] * stride_xc
    wb = w + b * stride_wb + c * stride_wc
    acc = tl.zeros([BP, BC], ACC)
    if HAS_CHAN:
        scale = tl.load(chan + b * stride_cb + c, mask=c_in,
                        other=0).to(ACC)
    for t in tl.static_range(TAPS):
        ih = oh * SH - PH + (t // KW) * DH
        iw = ow * SW - PW + (t % KW) * DW
        inside = p_in & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(xb + (ih * stride_xh + iw * stride_xw)[:, None],
                    mask=inside[:, None] & c_in[None, :], other=0)
        k = tl.load(wb + t, mask=c_in, other=0).to(ACC)
        if HAS_CHAN:
            k = k * scale
        if HAS_TAP:
            k = k * tl.load(tap + b * stride_tb + t).to(ACC)
        acc += a.to(ACC) * k[None, :]
    if HAS_BIAS:
        acc += tl.load(bias + b * C + c, mask=c_in, other=0).to(ACC)[None, :]
    write_block_output(acc, b, p, p_in, c, c_in, norm_s, norm_h, res,
                       stride_rb, stride_rc, stride_rp, y, stride_yb,
                       stride_yc, stride_yp, sums, C, HAS_NORM, HAS_RES,
                       RELU, RELU_CAP, SUMS, ACC)
