"""DyConv (Chen et al., CVPR 2020): K weights mixed by a softmax attention."""
from mmengine.registry import MODELS
from torch import Tensor, nn

from .base import IntOrPair, attention_width
from .functional import attention_branch, global_avg_pool, soften
from .weight_bank import WeightBankConv2d


class DyConvAttention(nn.Module):
    """Squeeze-and-excitation branch: global average pool, ``fc1`` and ReLU,
    ``fc2`` to K logits, softmax over the bank of ``logits / T``."""

    def __init__(self, in_channels: int, hidden_channels: int,
                 kernel_num: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.fc2 = nn.Linear(hidden_channels, kernel_num)

    @attention_branch
    def forward(self, x: Tensor, temperature: float) -> Tensor:
        hidden = self.fc1(global_avg_pool(x, self.fc1.weight.dtype)).relu()
        return soften(self.fc2(hidden), temperature).softmax(dim=1)


@MODELS.register_module()
class DyConv2d(WeightBankConv2d):
    """Dynamic convolution (DyConv): ``W(x) = sum_k pi_k(x) W_k`` with
    ``pi(x)`` a softmax attention from an SE-style branch.

    Args:
        kernel_num (int): Number of weights K. Default: 4, as in the paper.
        reduction (float): Width of the attention branch as a fraction of
            ``in_channels``. Default: 0.25 (the paper's reduction ratio 4).
        min_channels (int): Smallest width of the attention branch.
            Default: 4.
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
                 kernel_num: int = 4,
                 reduction: float = 0.25,
                 min_channels: int = 4,
                 temperature: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, kernel_num,
                         temperature)
        hidden = attention_width(type(self).__name__, in_channels, reduction,
                                 min_channels)
        self.attention = DyConvAttention(in_channels, hidden, kernel_num)

    def kernel_attention(self, x: Tensor) -> Tensor:
        return self.attention(x, self.temperature)
