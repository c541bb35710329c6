"""What every dynamic convolution in mmdyn shares: geometry, checks and
temperature."""
import math
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .functional import per_sample_conv2d
from .hooks import has_hooks
from .triton_support import (check_triton_kernels, interpreting,
                             triton_installed)

IntOrPair = Union[int, Tuple[int, int]]


def _check_positive_pair(layer: str, name: str, value: IntOrPair,
                         minimum: int) -> Tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum
                                 for v in pair):
        raise ValueError(
            f'{layer}: {name} must be an int or a pair of ints >= {minimum}, '
            f'got {value!r}')
    return pair


def check_temperature(layer: str, temperature: float) -> float:
    """Return ``temperature`` as a float, or raise if it is not finite and
    > 0."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float('nan')
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f'{layer}: temperature must be a finite number > 0 (1.0 turns '
            f'annealing off), got {temperature!r}')
    return value


def attention_width(layer: str, in_channels: int, reduction: float,
                    min_channels: int) -> int:
    """``max(int(in_channels * reduction), min_channels)``, the width rule of
    the ODConv and DyConv attention branches."""
    if not isinstance(reduction, (int, float)) or not reduction > 0:
        raise ValueError(
            f'{layer}: reduction must be a number > 0 (the attention width '
            f'is in_channels * reduction), got {reduction!r}')
    if not isinstance(min_channels, int) or min_channels < 1:
        raise ValueError(
            f'{layer}: min_channels must be an int >= 1, got '
            f'{min_channels!r}')
    return max(int(in_channels * reduction), min_channels)


class DynamicConv2d(nn.Module):
    """Base class of the dynamic convolutions: a conv whose kernel depends on
    its input.

    It holds the geometry of an ``nn.Conv2d`` (same argument names, so
    ``mmcv.cnn.build_conv_layer`` can build every subclass) and the softmax /
    sigmoid temperature of the attention branch. Subclasses implement
    ``forward``.

    Args:
        in_channels (int): Channels of the input.
        out_channels (int): Channels of the output.
        kernel_size (int | tuple[int, int]): Size of the kernel.
        stride, padding, dilation: As in ``nn.Conv2d``.
        groups (int): As in ``nn.Conv2d``; ``groups == in_channels ==
            out_channels`` is a depthwise convolution.
        bias (bool): Add a learnt bias. The papers' layers have none (a norm
            layer follows), so the default is False.
        temperature (float): Divides the attention logits before their
            softmax / sigmoid. 1.0 (the default) is what detection
            fine-tuning uses; :func:`mmdyn.set_temperature` or
            :class:`mmdyn.TemperatureAnnealingHook` change it.
    """

    # read by mmcv's ConvModule, as from any nn.Conv2d
    transposed = False
    output_padding = (0, 0)

    #: How per-sample kernels are applied: one conv with the batch folded
    #: into its groups ('grouped') or one conv per sample ('loop'). The
    #: result is the same; set it on the class (or a layer) to compare
    #: speeds, as ``tools/analysis_tools/benchmark.py --per-sample`` does.
    per_sample_conv: str = 'grouped'

    #: For layers that can apply their attentions either to per-sample
    #: kernels or to the activations (ODConv, DCD): kernels (True),
    #: activations (False), or whichever touches fewer numbers (None). The
    #: result is the same; only the speed differs.
    fold_attentions: Optional[bool] = None

    #: For layers with fused Triton kernels (ODConv and DCD):
    #: use them wherever they apply (:meth:`uses_triton`). None (the
    #: default): on CUDA when Triton is installed; True: also on a CPU
    #: through Triton's interpreter (``TRITON_INTERPRET=1``, for tests), and
    #: an error without Triton; False: never. The result is the same up to
    #: rounding.
    triton_kernels: Optional[bool] = None

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: IntOrPair = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: bool = False,
                 temperature: float = 1.0) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (('in_channels', in_channels),
                           ('out_channels', out_channels), ('groups', groups)):
            if not isinstance(value, int) or isinstance(value, bool) \
                    or value < 1:
                raise ValueError(
                    f'{name}: {arg} must be a positive int, got {value!r}')
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f'{name}: in_channels ({in_channels}) and out_channels '
                f'({out_channels}) must both be divisible by groups '
                f'({groups})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _check_positive_pair(name, 'kernel_size',
                                                kernel_size, 1)
        self.stride = _check_positive_pair(name, 'stride', stride, 1)
        self.padding = _check_positive_pair(name, 'padding', padding, 0)
        self.dilation = _check_positive_pair(name, 'dilation', dilation, 1)
        self.groups = groups
        self.temperature = temperature
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter('bias', None)

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = check_temperature(type(self).__name__, value)

    def init_weights(self) -> None:
        """Nothing to do: every layer is initialised when built, as the
        authors do. Defined so that mmcv's ConvModule does not apply its
        Kaiming init to a kernel bank as if it were one 4-D kernel."""

    def load_static_weight(self, weight, bias=None) -> None:
        """Start from a static conv: afterwards the layer computes exactly
        ``F.conv2d(x, weight, bias)`` (at temperature 1) while its attention
        can still learn. Subclasses document how.

        Args:
            weight (Tensor): (out_channels, in_channels / groups, kh, kw).
            bias (Tensor, optional): (out_channels, ).
        """
        raise NotImplementedError

    def _check_static(self, weight, bias):
        expected = (self.out_channels, self.in_channels // self.groups,
                    *self.kernel_size)
        if tuple(weight.shape) != expected:
            raise ValueError(
                f'{type(self).__name__}: a static kernel of shape '
                f'{tuple(weight.shape)} does not fit this layer, which needs '
                f'{expected}')
        if bias is not None and self.bias is None:
            raise ValueError(
                f'{type(self).__name__}: the static conv has a bias but this '
                f'layer was built with bias=False')

    def _load_static_bias(self, bias, kernel_num=None):
        if self.bias is None:
            return
        with torch.no_grad():
            value = torch.zeros(self.out_channels) if bias is None else bias
            self.bias.copy_(value if kernel_num is None else
                            value.expand_as(self.bias))

    def attention_maps(self, x: Tensor) -> Dict[str, Tensor]:
        """The attentions this layer computes for input ``x``, by name,
        each with the batch first (for analysis; forward does not use it)."""
        raise NotImplementedError

    def cuda_graph_key(self) -> tuple:
        """The settings, read in Python, that choose the kernels forward
        launches (a captured CUDA graph holds for one value of them)."""
        return (self.temperature, self.fold_attentions, self.per_sample_conv,
                self.triton_kernels)

    def uses_triton(self, x: Tensor) -> bool:
        """Whether forward computes input ``x``'s per-sample kernels with
        fused Triton kernels; layers without any say False."""
        return False

    def takes_input_sum(self, x: Tensor) -> bool:
        """Whether ``forward(x, input_sum)`` would use ``input_sum``, ``x``
        summed over its pixels (B, C), instead of summing ``x`` itself:
        where the fused kernels run (:meth:`uses_triton`, whose attention
        branch starts from those sums) and no hooks would see the extra
        argument or its gradient. A layer whose :meth:`uses_triton` can be
        True takes ``input_sum`` in forward."""
        return self.uses_triton(x) and not has_hooks(self)

    def _triton_can_run(self, x: Tensor, params, branches) -> bool:
        """What every fused path needs: :attr:`triton_kernels` allows it
        for ``x``'s device, a non-empty float32 or float64 input and ``params``
        outside autocast, ``torch.compile`` and tracing, and no hooks on the
        ``branches`` (modules whose forward the kernels stand in for)."""
        choice = self.triton_kernels
        check_triton_kernels(type(self).__name__, choice)
        if choice is False:
            return False
        if not triton_installed():
            if choice:
                raise RuntimeError(
                    f'{type(self).__name__}: triton_kernels=True but Triton '
                    'is not installed (pip install triton), or set '
                    'triton_kernels=None to use it where available')
            return False
        if not (x.is_cuda or (choice and x.device.type == 'cpu'
                              and interpreting())):
            return False
        return (x.dtype in (torch.float32, torch.float64) and x.numel() > 0
                and all(p.dtype == x.dtype for p in params)
                and not torch.is_autocast_enabled(x.device.type)
                and not torch.compiler.is_compiling()
                and not torch.jit.is_tracing()
                and not any(m._forward_hooks or m._forward_pre_hooks
                            for branch in branches
                            for m in branch.modules()))

    def update_temperature(self, temperature: float) -> None:
        """Set the temperature (the name the authors' code uses)."""
        self.temperature = temperature

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels

    @property
    def is_pointwise(self) -> bool:
        return self.kernel_size == (1, 1)

    def conv_kwargs(self) -> dict:
        """Keyword arguments of ``F.conv2d`` for this layer's geometry."""
        return dict(stride=self.stride, padding=self.padding,
                    dilation=self.dilation)

    def per_sample(self, x: Tensor, weight: Tensor,
                   bias: Optional[Tensor] = None) -> Tensor:
        """Convolve each sample of ``x`` with its own kernel ``weight[b]``
        (and bias ``bias[b]``) in this layer's geometry."""
        if self.per_sample_conv not in ('grouped', 'loop'):
            raise ValueError(
                f"{type(self).__name__}: per_sample_conv must be 'grouped' "
                f"or 'loop', got {self.per_sample_conv!r}")
        return per_sample_conv2d(x, weight, bias, self.stride, self.padding,
                                 self.dilation, self.groups,
                                 loop=self.per_sample_conv == 'loop')

    def folds_attentions(self, x: Tensor) -> bool:
        """Whether to apply the attentions to per-sample kernels for input
        ``x``: :attr:`fold_attentions` if set, else whether one kernel per
        sample has fewer numbers than the input and output together."""
        if self.fold_attentions is not None:
            return self.fold_attentions
        height, width = x.shape[-2:]
        out_h, out_w = self.output_size(height, width)
        kernel = self.out_channels * (self.in_channels // self.groups) * \
            self.kernel_size[0] * self.kernel_size[1]
        return kernel <= self.in_channels * height * width + \
            self.out_channels * out_h * out_w

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """Spatial size of the output for an input of ``height x width``."""
        return tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip((height, width), self.kernel_size,
                                        self.stride, self.padding,
                                        self.dilation))

    def extra_repr(self) -> str:
        text = (f'{self.in_channels}, {self.out_channels}, '
                f'kernel_size={self.kernel_size}, stride={self.stride}')
        if self.padding != (0, 0):
            text += f', padding={self.padding}'
        if self.dilation != (1, 1):
            text += f', dilation={self.dilation}'
        if self.groups != 1:
            text += f', groups={self.groups}'
        if self.bias is None:
            text += ', bias=False'
        if hasattr(self, 'kernel_num'):
            text += f', kernel_num={self.kernel_num}'
        if self.temperature != 1.0:
            text += f', temperature={self.temperature:g}'
        return text


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set the temperature of every dynamic convolution inside ``model``.

    Returns:
        int: How many layers were set (0 means ``model`` has none).
    """
    layers = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    for layer in layers:
        layer.temperature = temperature
    return len(layers)
