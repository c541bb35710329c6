"""CondConv (Yang et al., NeurIPS 2019): K weights mixed by sigmoid routing
weights."""
import torch
from mmengine.registry import MODELS
from torch import Tensor, nn

from .base import IntOrPair
from .functional import attention_branch, global_avg_pool, soften
from .weight_bank import WeightBankConv2d


class CondConvRouting(nn.Module):
    """Routing function: global average pool, one fully connected layer to K
    logits, sigmoid of ``logits / T`` (the weights need not sum to 1)."""

    def __init__(self, in_channels: int, kernel_num: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, kernel_num)

    @attention_branch
    def forward(self, x: Tensor, temperature: float) -> Tensor:
        pooled = global_avg_pool(x, self.fc.weight.dtype)
        return soften(self.fc(pooled), temperature).sigmoid()


@MODELS.register_module()
class CondConv2d(WeightBankConv2d):
    """Conditionally parameterised convolution: ``W(x) = sum_k r_k(x) W_k``
    with sigmoid routing weights ``r(x)``.

    Args:
        kernel_num (int): Number of weights (experts) K. Default: 8, as in
            the paper's detection and ImageNet comparisons.
        Others: see :class:`mmdyn.layers.WeightBankConv2d`.
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
                 kernel_num: int = 8,
                 temperature: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, kernel_num,
                         temperature)
        self.attention = CondConvRouting(in_channels, kernel_num)

    def prepare_static_start(self) -> float:
        """Zero the routing layer: each weight is then sigmoid(0) = 0.5."""
        with torch.no_grad():
            self.attention.fc.weight.zero_()
            self.attention.fc.bias.zero_()
        return 0.5 * self.kernel_num

    def kernel_attention(self, x: Tensor) -> Tensor:
        return self.attention(x, self.temperature)
