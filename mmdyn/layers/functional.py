"""Batched building blocks of the dynamic convolutions: no Python loop over
the batch anywhere."""
import functools
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def global_avg_pool(x: Tensor,
                    dtype: Optional[torch.dtype] = None) -> Tensor:
    """Mean over H and W as (B, C), in ``dtype`` (default: x's).
    Half-precision inputs are accumulated in float32, so large activations
    cannot overflow the sum.

    When ``x`` needs a gradient the mean is taken as a sum scaled on the
    pooled vector: the gradient of a sum is a broadcast view of the pooled
    gradient, where that of ``mean`` writes a full-size tensor (one pass
    over the activations per layer). Not while ``torch.jit`` traces (as
    MMEngine's FLOP counter does, with or without gradients): the trace
    then shows one mean, counted the same in both modes.

    Where the conv kernel that wrote ``x`` kept its sums over the pixels
    (:mod:`mmdyn.ops.pixel_sums`), the mean is taken from those."""
    from ..ops.pixel_sums import recall  # the ops import this module
    dtype = x.dtype if dtype is None else dtype
    kept = recall(x)
    if kept is not None:
        return (kept / (x.shape[2] * x.shape[3])).to(dtype)
    accumulate = accumulation_dtype(x.dtype)
    if (x.requires_grad and torch.is_grad_enabled()
            and not torch.jit.is_tracing()):
        pooled = x.sum(dim=(2, 3), dtype=accumulate)
        pooled = pooled * (1.0 / (x.shape[2] * x.shape[3]))
    else:
        pooled = x.mean(dim=(2, 3), dtype=accumulate)
    return pooled.to(dtype)


def attention_branch(branch: Callable) -> Callable:
    """Decorate ``branch(self, x, ...)``, the forward of an attention
    branch, to run outside autocast.

    Under mixed precision the branch then computes in its parameters'
    precision (float32) on the float32-accumulated pooled input: in float16
    its sums over channels of large activations overflow, and softmax or
    sigmoid of inf is NaN. The branch is tiny (one vector per sample), so
    this costs nothing; its attentions are returned in autocast's dtype,
    that of the layer's conv outputs they scale.
    """

    @functools.wraps(branch)
    def run(self, x: Tensor, *args):
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            return branch(self, x, *args)
        with torch.autocast(device, enabled=False):
            attentions = branch(self, x, *args)
        dtype = torch.get_autocast_dtype(device)
        if isinstance(attentions, Tensor):
            return attentions.to(dtype)
        return type(attentions)(*(None if a is None else a.to(dtype)
                                  for a in attentions))

    return run


def soften(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature``, without an operation at temperature 1 (the
    detection setting)."""
    return logits if temperature == 1.0 else logits / temperature


def hard_sigmoid_gate(x: Tensor) -> Tensor:
    """DCD's gate ``relu6(x + 3) / 3``: 1 at x = 0, range [0, 2]. It is
    twice ``torch.nn.Hardsigmoid``, as in the authors' released code."""
    return F.relu6(x + 3.0) / 3.0


def mix_weights(attention: Tensor, bank: Tensor) -> Tensor:
    """Per-sample weights ``sum_k attention[b, k] * bank[k]``: Eq. 1 of the
    ODConv paper (CondConv's and DyConv's mixture of experts).

    Args:
        attention: (B, K) attention over the bank.
        bank: (K, ...) K weights (or biases).

    Returns:
        Tensor: (B, ...) one mixed weight per sample.
    """
    num = bank.shape[0]
    mixed = attention.to(bank.dtype) @ bank.reshape(num, -1)
    return mixed.view(attention.shape[0], *bank.shape[1:])


def exporting() -> bool:
    """Whether the model is being exported (``torch.onnx.export`` or
    ``torch.export``): the layers then compute with operations that keep
    the batch size a free dimension of the exported graph."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def adaptive_avg_pool2x2(x: Tensor) -> Tensor:
    """``F.adaptive_avg_pool2d(x, 2)``; while :func:`exporting`, as the means
    of its four bins, rows ``[0, ceil(H/2))`` and ``[floor(H/2), H)`` by the
    same columns, so that the exported graph follows the input's size (the
    exporters fix adaptive pooling to the example's size)."""
    height, width = x.shape[-2:]
    if not exporting():
        if min(height, width) < 2 or x.is_contiguous():
            return F.adaptive_avg_pool2d(x, 2)
        # the same bins as one window of ceil(n/2) moved by floor(n/2) on
        # each side; for a channels-last input PyTorch's fixed-window pool
        # is the faster kernel, its adaptive pool the faster for NCHW
        return F.avg_pool2d(x, ((height + 1) // 2, (width + 1) // 2),
                            (height // 2, width // 2))
    rows = (x[:, :, :(height + 1) // 2], x[:, :, height // 2:])
    return torch.stack([
        torch.stack([r[..., :(width + 1) // 2].mean((2, 3)),
                     r[..., width // 2:].mean((2, 3))], dim=-1)
        for r in rows
    ], dim=-2)


def per_sample_conv2d(x: Tensor,
                      weight: Tensor,
                      bias: Optional[Tensor],
                      stride: Tuple[int, int],
                      padding: Tuple[int, int],
                      dilation: Tuple[int, int],
                      groups: int) -> Tensor:
    """Convolve each sample with its own weight: one ``F.conv2d`` with the
    batch folded into the groups; while :func:`exporting` with a dynamic
    batch, a batched matrix product over unfolded patches
    (:func:`per_sample_conv2d_unfolded`), since an exported conv's group
    count is a constant.

    Args:
        x: (B, C_in, H, W) input.
        weight: (B, C_out, C_in / groups, kh, kw) one weight per sample.
        bias: (B, C_out) one bias per sample, or None.
    """
    if exporting() and not isinstance(x.shape[0], int):
        # a dynamic batch: a symbolic size, not an int
        return per_sample_conv2d_unfolded(x, weight, bias, stride, padding,
                                          dilation, groups)
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[1]
    if batch == 0:  # a conv cannot have zero groups
        return x.new_empty(0, out_channels,
                           *conv_output_size(x, weight, stride, padding,
                                             dilation))
    out = F.conv2d(
        x.reshape(1, batch * in_channels, height, width),
        weight.reshape(batch * out_channels, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=batch * groups)
    return out.view(batch, out_channels, *out.shape[-2:])


def per_sample_conv2d_unfolded(x: Tensor,
                               weight: Tensor,
                               bias: Optional[Tensor],
                               stride: Tuple[int, int],
                               padding: Tuple[int, int],
                               dilation: Tuple[int, int],
                               groups: int) -> Tensor:
    """:func:`per_sample_conv2d` as ``weight[b] @ patches[b]``, group by
    group: the input's kh x kw patches (``F.unfold``, rows ordered as a
    weight's (C_in / groups, kh, kw)) times the flattened weights. An
    unpadded 1x1 conv's patches are its (strided) pixels, taken without
    unfolding, which keeps the exported graph small. Every dimension of
    the result, the batch included, follows the input's shape, which is
    what an exported graph with a dynamic batch needs."""
    batch, out_channels = weight.shape[:2]
    if weight.shape[-2:] == (1, 1) and padding == (0, 0):
        if stride != (1, 1):
            x = x[:, :, ::stride[0], ::stride[1]]
        out_h, out_w = x.shape[-2:]
        patches = x.flatten(2)
    else:
        out_h, out_w = conv_output_size(x, weight, stride, padding,
                                        dilation)
        patches = F.unfold(x, weight.shape[-2:], dilation=dilation,
                           padding=padding, stride=stride)
    patches = patches.unflatten(1, (groups, -1))
    weight = weight.reshape(batch, groups, out_channels // groups, -1)
    out = torch.matmul(weight, patches).reshape(batch, out_channels, out_h,
                                                out_w)
    if bias is not None:
        out = out + bias[:, :, None, None]
    return out


def conv_output_size(x: Tensor, weight: Tensor, stride, padding,
                     dilation) -> Tuple[int, int]:
    """(H, W) of a conv's output, for input ``x`` (..., H, W) and weights
    (..., kh, kw)."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(x.shape[-2:], weight.shape[-2:],
                                          stride, padding, dilation))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums over a feature map are taken in for inputs of
    ``dtype``: float64 for float64, float32 otherwise (a half-precision
    sum over many pixels overflows or loses the small terms)."""
    return torch.float64 if dtype == torch.float64 else torch.float32
