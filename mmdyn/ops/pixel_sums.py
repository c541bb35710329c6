"""The sums over each channel's pixels that the dynamic layers' attention
branches pool their input with, and those a conv kernel takes of the
output it writes, for the layer that reads that output next.

Every dynamic layer's attention branch starts from the global average
pool of its input (ODConv Sec. 3.2; DCD's, DyConv's and CondConv's
branches alike): a pass of its own over an activation. In a block whose
dynamic conv computes through the per-sample conv's forward kernel with
the block's operations (:func:`mmdyn.ops.conv_norm.conv_norm_act`,
inference at a large batch), the kernel holds each output tile as it
writes it, and adds up the tile's pixels per channel: a few partial sums
per tile (:func:`keep`). The next dynamic layer, whose input that output
is (the next conv of the block, or the first of the next block), adds
those partial sums instead of reading its input again (:func:`recall`,
through :func:`pixel_sums` and
:func:`~mmdyn.layers.functional.global_avg_pool`).

The partial sums are kept on the output tensor, with its version counter:
a tensor changed in place after the kernel wrote it (which increments the
counter) has them discarded, a view or a copy of it has none, and while a
model is traced or compiled none are taken, so a pool never adds sums of
values other than its input's.
"""
from typing import Optional

from torch import Tensor

from .._compat import version_counter
from .dispatch import compute_dtype, tracing_or_compiling

#: the attribute of an output tensor that holds its partial sums
_KEPT = '_mmdyn_partial_sums'


def pixel_sums(x: Tensor) -> Tensor:
    """The sums over H and W of ``x`` (B, C, H, W) as (B, C), in the
    dtype a fused op computes in
    (:func:`~mmdyn.ops.dispatch.compute_dtype`): those the kernel that
    wrote ``x`` kept (:func:`recall`), or taken now."""
    dtype = compute_dtype(x)
    kept = recall(x)
    if kept is not None:
        return kept.to(dtype)
    return x.sum(dim=(2, 3), dtype=dtype)


def keep(output: Tensor, partial_sums: Tensor) -> None:
    """Keep ``partial_sums`` (B, parts, C), whose sum over the parts is
    the sum over each channel's pixels of ``output`` (B, C, H, W) as it was
    written, for :func:`recall`."""
    setattr(output, _KEPT, (partial_sums, version_counter(output)))


def recall(x: Tensor) -> Optional[Tensor]:
    """The sums over the pixels of ``x`` (B, C, H, W) as (B, C), in the
    dtype the kernel took them in (float32, or float64 for float64), where
    that kernel kept them (:func:`keep`) and ``x`` is unchanged since;
    None otherwise, and where ``x`` needs a gradient (the kept sums have
    none) or a model is being traced or compiled."""
    kept = getattr(x, _KEPT, None)
    if kept is None or x.requires_grad or tracing_or_compiling():
        return None
    partial_sums, version = kept
    if version is None or version_counter(x) != version:
        return None
    return partial_sums.sum(dim=1)
