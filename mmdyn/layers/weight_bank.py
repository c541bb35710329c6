"""A bank of K static weights mixed per sample by an attention: Eq. 1 of
the ODConv paper, ``y = (a_1 W_1 + ... + a_K W_K) * x``, as in CondConv and
DyConv."""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import BaseDynamicConv2d, IntOrPair
from .functional import mix_weights


def check_kernel_num(layer: str, kernel_num: int) -> int:
    if not isinstance(kernel_num, int) or isinstance(kernel_num, bool) \
            or kernel_num < 1:
        raise ValueError(
            f'{layer}: kernel_num must be an int >= 1, got {kernel_num!r}')
    return kernel_num


def make_weight_bank(kernel_num: int, out_channels: int, in_per_group: int,
                     kernel_size: tuple) -> nn.Parameter:
    """(kernel_num, out, in / groups, kh, kw) weights, each drawn
    independently with Kaiming-normal (fan_out, ReLU) as in the authors'
    code."""
    weight = torch.empty(kernel_num, out_channels, in_per_group, *kernel_size)
    for one in weight:
        nn.init.kaiming_normal_(one, mode='fan_out', nonlinearity='relu')
    return nn.Parameter(weight)


class WeightBankConv2d(BaseDynamicConv2d):
    """Base of CondConv and DyConv: K weights (and biases) mixed by a
    per-sample attention of shape (B, K) that subclasses compute in
    :meth:`kernel_attention`.

    Args:
        kernel_num (int): Number of weights K (the papers' "kernels").
        Others: see :class:`BaseDynamicConv2d`. With ``bias=True`` each
            weight has its own bias, mixed by the same attention.

    ``static_bias`` (None unless set) is a bias added after the mix: what
    folding the BatchNorm after the layer leaves
    (:func:`mmdyn.deploy.fuse_conv_bn`), since CondConv's routing weights
    need not sum to 1.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrPair,
                 stride: IntOrPair = 1,
                 padding: IntOrPair = 0,
                 dilation: IntOrPair = 1,
                 groups: int = 1,
                 bias: bool = False,
                 kernel_num: int = 4,
                 temperature: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, False, temperature)
        self.kernel_num = check_kernel_num(type(self).__name__, kernel_num)
        self.weight = make_weight_bank(kernel_num, out_channels,
                                       in_channels // groups,
                                       self.kernel_size)
        if bias:
            self.bias = nn.Parameter(torch.zeros(kernel_num, out_channels))
        self.register_parameter('static_bias', None)

    def kernel_attention(self, x: Tensor) -> Tensor:
        """(B, K) weights of the bank's K weights for input ``x``."""
        raise NotImplementedError

    def attention_maps(self, x: Tensor) -> Dict[str, Tensor]:
        return {'kernel': self.kernel_attention(x)}

    def prepare_static_start(self) -> float:
        """Put the attention in its start state for
        :meth:`load_static_weight` and return the sum of the K attention
        weights there. A softmax sums to 1 whatever its input."""
        return 1.0

    def load_static_weight(self, weight: Tensor, bias=None) -> None:
        """Every weight (and bias) of the bank becomes ``weight / s`` with
        ``s`` the sum of the attention weights at the start, so the layer
        starts as the static conv."""
        self._check_static(weight, bias)
        scale = 1.0 / self.prepare_static_start()
        with torch.no_grad():
            self.weight.copy_((weight * scale).expand_as(self.weight))
        self._load_static_bias(None if bias is None else bias * scale,
                               self.kernel_num)

    def per_sample_weights(self, x: Tensor) -> Tuple[Tensor,
                                                     Optional[Tensor]]:
        """The bank's weights (and biases) mixed by the attention for each
        sample of ``x``."""
        attention = self.kernel_attention(x)
        weight = mix_weights(attention, self.weight)
        bias = None if self.bias is None else mix_weights(attention,
                                                          self.bias)
        if self.static_bias is not None:
            bias = self.static_bias.expand(x.shape[0], -1) if bias is None \
                else bias + self.static_bias
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        return self.per_sample(x, *self.per_sample_weights(x))
