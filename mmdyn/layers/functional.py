"""Batched building blocks of the dynamic convolutions (no Python loop over
the batch, except where ``per_sample_conv2d`` is asked for one)."""
import functools
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .conv_precision import pixelwise_matmul


def global_avg_pool(x: Tensor,
                    dtype: Optional[torch.dtype] = None) -> Tensor:
    """Mean over H and W as (B, C), in ``dtype`` (default: x's).
    Half-precision inputs are accumulated in float32, so large activations
    cannot overflow the sum.

    When ``x`` needs a gradient the mean is taken as a sum scaled on the
    pooled vector: the gradient of a sum is a broadcast view of the pooled
    gradient, where that of ``mean`` writes a full-size tensor (one pass
    over the activations per layer, which a dynamic backbone pays at every
    layer)."""
    dtype = x.dtype if dtype is None else dtype
    accumulate = torch.float32 if x.dtype in (torch.float16,
                                              torch.bfloat16) else x.dtype
    if x.requires_grad and torch.is_grad_enabled():
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


def batch_norm_affine(
        bn: _BatchNorm,
        invstd: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``(a, c)`` with ``bn(v) == a * v + c`` for a BatchNorm that uses its
    running statistics (``invstd``: ``1 / sqrt(running_var + eps)`` if the
    caller has it)."""
    if invstd is None:
        invstd = torch.rsqrt(bn.running_var + bn.eps)
    scale = invstd
    if bn.weight is not None:
        scale = scale * bn.weight
    if bn.bias is None:
        return scale, -bn.running_mean * scale
    return scale, torch.addcmul(bn.bias, bn.running_mean, scale, value=-1)


def aggregate_kernels(attention: Tensor, weight: Tensor) -> Tensor:
    """Per-sample kernel ``sum_k attention[b, k] * weight[k]``.

    Args:
        attention: (B, K) kernel attention.
        weight: (K, ...) kernel bank.

    Returns:
        Tensor: (B, ...) one kernel per sample.
    """
    num_kernels = weight.shape[0]
    mixed = attention.to(weight.dtype) @ weight.reshape(num_kernels, -1)
    return mixed.view(attention.shape[0], *weight.shape[1:])


def per_sample_conv2d(x: Tensor,
                      weight: Tensor,
                      bias: Optional[Tensor],
                      stride: Tuple[int, int],
                      padding: Tuple[int, int],
                      dilation: Tuple[int, int],
                      groups: int,
                      loop: bool = False) -> Tensor:
    """Convolve each sample with its own kernel.

    Args:
        x: (B, C_in, H, W) input.
        weight: (B, C_out, C_in / groups, kh, kw) one kernel per sample.
        bias: (B, C_out) one bias per sample, or None.
        loop: Run one ``F.conv2d`` per sample instead of one for the batch
            (the result is the same; GPU libraries may be faster one way or
            the other at small batches).

    A 1x1 kernel with one group and no padding is a batched matrix product
    over the (strided) pixels, in the precision of convolutions
    (:func:`pixelwise_matmul`); anything else folds the batch into the
    groups of a single ``F.conv2d``, or loops over the batch.
    """
    batch, in_channels, height, width = x.shape
    out_channels = weight.shape[1]
    if weight.shape[-2:] == (1, 1) and groups == 1 and padding == (0, 0):
        if stride != (1, 1):
            x = x[:, :, ::stride[0], ::stride[1]]
        out_h, out_w = x.shape[-2:]
        pixels = x.reshape(batch, in_channels, out_h * out_w)
        kernels = weight.view(batch, out_channels, in_channels)
        out = pixelwise_matmul(kernels, pixels, bias)
        return out.view(batch, out_channels, out_h, out_w)
    if loop:
        return torch.cat([
            F.conv2d(x[i:i + 1], weight[i],
                     None if bias is None else bias[i], stride, padding,
                     dilation, groups) for i in range(batch)
        ])
    out = F.conv2d(
        x.reshape(1, batch * in_channels, height, width),
        weight.reshape(batch * out_channels, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=batch * groups)
    return out.view(batch, out_channels, *out.shape[-2:])
