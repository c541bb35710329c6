"""What every dynamic convolution in mmdyn shares: geometry, checks and
temperature."""
import math
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..ops import block_diagonal_conv as block_diagonal
from ..ops import per_sample_conv as fused_conv
from .functional import per_sample_conv2d

IntOrPair = Union[int, Tuple[int, int]]


def _check_positive_pair(layer: str, name: str, value: IntOrPair,
                         minimum: int) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        pair = tuple(value)
    else:
        pair = (value, value)
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


class BaseDynamicConv2d(nn.Module):
    """Base class of the dynamic convolutions (not itself one): a conv whose
    weights depend on its input.

    It holds the geometry of an ``nn.Conv2d`` (same argument names, so
    ``mmcv.cnn.build_conv_layer`` can build every subclass) and the softmax /
    sigmoid temperature of the attention branch. Subclasses implement
    ``forward``: the paper's computation in PyTorch operations, and where a
    fused op of :mod:`mmdyn.ops` applies, that op instead.

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
        Kaiming init to a bank of weights as if it were one 4-D weight."""

    def load_static_weight(self, weight, bias=None) -> None:
        """Start from a static conv ("inflation"): afterwards the layer
        computes exactly ``F.conv2d(x, weight, bias)`` (at temperature 1)
        while its attention can still learn. Subclasses document how.

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
                f'{type(self).__name__}: a static weight of shape '
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

    def update_temperature(self, temperature: float) -> None:
        """Set the temperature (the name the authors' code uses)."""
        self.temperature = temperature

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels

    def conv_kwargs(self) -> dict:
        """Keyword arguments of ``F.conv2d`` for this layer's geometry."""
        return dict(stride=self.stride, padding=self.padding,
                    dilation=self.dilation)

    def per_sample_weights(
            self, x: Tensor) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
        """Where this layer's forward convolves ``x`` with weights of its
        own per sample, those weights (B, out, in / groups, kh, kw) and
        biases (B, out; None without a bias), which :meth:`per_sample`
        then convolves ``x`` with; None where its forward computes the
        output another way."""
        return None

    def per_sample(self, x: Tensor, weight: Tensor,
                   bias: Optional[Tensor] = None) -> Tensor:
        """Convolve each sample of ``x`` with its own weight ``weight[b]``
        (and bias ``bias[b]``) in this layer's geometry: by one grouped
        ``F.conv2d``, or where a faster form applies, by one dense conv over
        a block-diagonal weight (:mod:`mmdyn.ops.block_diagonal_conv`) or
        the fused op (:mod:`mmdyn.ops.per_sample_conv`)."""
        if block_diagonal.applies(self, x, weight, bias):
            return block_diagonal.block_diagonal_conv(
                x, weight, bias, self.stride, self.padding, self.dilation)
        if fused_conv.applies(self, x, weight, bias):
            return fused_conv.per_sample_conv(
                x, weight, bias,
                fused_conv.Geometry(self.stride, self.padding, self.dilation))
        return per_sample_conv2d(x, weight, bias, self.stride, self.padding,
                                 self.dilation, self.groups)

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
    layers = [m for m in model.modules()
              if isinstance(m, BaseDynamicConv2d)]
    for layer in layers:
        layer.temperature = temperature
    return len(layers)
