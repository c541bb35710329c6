"""Fused computations that stand in for parts of the layers' forward and
backward (Triton kernels inside autograd Functions), and the one dispatch
that decides where they may run (:mod:`mmdyn.ops.dispatch`).

Each op is a module with an ``applies`` function and the computation
itself: :mod:`.odconv_weights` (ODConv's attentions and per-sample weights),
:mod:`.dcd_weights` (DCD's per-sample weights and biases),
:mod:`.conv_norm` (those biases added by the eval-mode BatchNorm after the
conv; at inference at large batches, the block's norm, residual and ReLU
applied by the conv kernel as it writes), :mod:`.per_sample_conv`
(per-sample weights applied at large batches), and for inference at
large batches :mod:`.scaled_weight_conv` (ODConv with one weight, its
attentions applied inside the conv kernel), :mod:`.dcd_conv` (DCD's
Eq. 4 in the same kernel) and :mod:`.depthwise_conv` (a depthwise layer's
per-sample weights), whose kernels keep their output's pixel sums for the
next layer's attention (:mod:`.pixel_sums`).
:mod:`.block_diagonal_conv` has no kernel of its own: it applies per-sample
1x1 weights at two images as one dense cuDNN conv, and asks the same
dispatch. The layers in :mod:`mmdyn.layers` and the backbones' blocks call
them; the layers' own PyTorch operations compute the same, and the tests
hold both to the papers' reference formulation.
"""
from .dispatch import (MODES, fused_ops, fused_ops_mode, may_fuse,
                       set_fused_ops, tracing_or_compiling)

__all__ = [
    'MODES', 'fused_ops', 'fused_ops_mode', 'set_fused_ops', 'may_fuse',
    'tracing_or_compiling'
]
