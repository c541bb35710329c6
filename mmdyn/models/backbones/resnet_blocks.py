"""MMDetection's residual blocks, with each conv and its norm applied by
:func:`mmdyn.layers.conv_then_norm`: a dynamic conv's per-sample bias (folded
DCD) is then added by the eval-mode BatchNorm after it, in the pass that
the norm makes anyway. The ReLU before a conv whose attention pools its
input also sums its output for it, in its own pass
(:func:`mmdyn.layers.relu_then_sum.relu_then_sum`); for the block's last
ReLU that conv is the next block's first (:meth:`DynamicBottleneck.
forward_summed`, :func:`run_blocks`). The blocks' layers, names and
arguments are MMDetection's; with any other conv or norm they compute
exactly what MMDetection's blocks do."""
from typing import Iterable, Optional, Tuple

import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.models.layers import ResLayer
from torch import Tensor, nn

from ...layers.bias_into_norm import conv_then_norm
from ...layers.hooks import has_hooks
from ...layers.relu_then_sum import relu_then_sum


def _run(block, inner_forward, x: Tensor, x_sum: Optional[Tensor],
         next_conv: Optional[nn.Module]) -> Tuple[Tensor, Optional[Tensor]]:
    """``relu(inner_forward(x, x_sum))``, checkpointed where the block
    asks, and the ReLU's sums where ``next_conv`` takes them."""
    if block.with_cp and x.requires_grad:
        out = cp.checkpoint(inner_forward, x, x_sum, use_reentrant=False)
    else:
        out = inner_forward(x, x_sum)
    if next_conv is None:
        return block.relu(out), None
    return relu_then_sum(block.relu, out, next_conv)


class _SummedBlock:
    """``forward(x)`` of the blocks below, through ``forward_summed``."""

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_summed(x)[0]

    def forward_summed(
            self,
            x: Tensor,
            x_sum: Optional[Tensor] = None,
            next_conv: Optional[nn.Module] = None
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """The block's output and, where ``next_conv`` (the conv it feeds)
        takes them, its sums over the pixels (else None). ``x_sum``:
        ``x``'s sums, where the previous block made them for ``conv1``."""
        return _run(self, self._inner_forward, x, x_sum, next_conv)


class DynamicBasicBlock(_SummedBlock, BasicBlock):
    """:class:`mmdet.models.backbones.resnet.BasicBlock` whose convs hand
    their per-sample bias to the norm after them."""

    def _inner_forward(self, x, x_sum):
        out, out_sum = relu_then_sum(
            self.relu, conv_then_norm(self.conv1, self.norm1, x, x_sum),
            self.conv2)
        out = conv_then_norm(self.conv2, self.norm2, out, out_sum)
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return out


class DynamicBottleneck(_SummedBlock, Bottleneck):
    """:class:`mmdet.models.backbones.resnet.Bottleneck` (plugins
    included) whose convs hand their per-sample bias to the norm after
    them."""

    def _inner_forward(self, x, x_sum):
        out, out_sum = self._relu_for(
            conv_then_norm(self.conv1, self.norm1, x, x_sum), self.conv2)
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
        out, out_sum = self._relu_for(
            conv_then_norm(self.conv2, self.norm2, out, out_sum),
            self.conv3)
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
        out = conv_then_norm(self.conv3, self.norm3, out, out_sum)
        if self.with_plugins:
            out = self.forward_plugin(out, self.after_conv3_plugin_names)
        identity = x if self.downsample is None else self.downsample(x)
        out += identity
        return out

    def _relu_for(self, x, conv):
        """``relu(x)`` and its sums for ``conv`` (None where a plugin comes
        between them and changes its input)."""
        if self.with_plugins:
            return self.relu(x), None
        return relu_then_sum(self.relu, x, conv)


#: MMDetection's block -> the one that hands biases to its norms
DYNAMIC_BLOCKS = {BasicBlock: DynamicBasicBlock, Bottleneck: DynamicBottleneck}


def _summing(module: nn.Module) -> bool:
    """Whether ``module`` is a block that can be run through
    ``forward_summed``: one of the above, without hooks (called directly,
    it would skip them)."""
    return isinstance(module, _SummedBlock) and not has_hooks(module)


def run_blocks(stages: Iterable[nn.Module], x: Tensor) -> list:
    """Run ``x`` through ``stages`` (``nn.Sequential`` s of blocks, in
    order) and return each stage's output; as ``stage(x)`` in turn, except
    that a block followed by another of :data:`DYNAMIC_BLOCKS` hands it
    the sums of its output for its ``conv1`` (where that conv takes them),
    from the pass of its last ReLU. A stage with hooks, or that is not an
    ``nn.Sequential``, is called as it is, and hands on no sums."""
    # each stage as its blocks, or as one unit where it must be called
    groups = [
        list(stage) if type(stage) in (nn.Sequential, ResLayer)
        and not has_hooks(stage) else [stage] for stage in stages
    ]
    units = [unit for group in groups for unit in group]
    summing = [_summing(unit) for unit in units] + [False]
    outs = []
    x_sum = None
    position = 0
    for group in groups:
        for unit in group:
            if summing[position]:
                next_conv = units[position + 1].conv1 \
                    if summing[position + 1] else None
                x, x_sum = unit.forward_summed(x, x_sum, next_conv)
            else:
                x, x_sum = unit(x), None
            position += 1
        outs.append(x)
    return outs
