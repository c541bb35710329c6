"""MMDetection's residual blocks, with each conv and its norm applied by
:func:`mmdyn.layers.conv_then_norm`: a dynamic conv's per-sample bias (folded
DCD) is then added by the eval-mode BatchNorm after it, in the pass that
the norm makes anyway. The ReLU before a conv whose attention pools its
input also sums its output for it, in its own pass
(:func:`mmdyn.layers.relu_then_sum.relu_then_sum`). The blocks' layers, names
and arguments are MMDetection's; with any other conv or norm they compute
exactly what MMDetection's blocks do."""
import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck

from ...layers.bias_into_norm import conv_then_norm
from ...layers.relu_then_sum import relu_then_sum


def _run(block, inner_forward, x):
    """``relu(inner_forward(x))``, checkpointed where the block asks."""
    if block.with_cp and x.requires_grad:
        out = cp.checkpoint(inner_forward, x, use_reentrant=False)
    else:
        out = inner_forward(x)
    return block.relu(out)


class DynamicBasicBlock(BasicBlock):
    """:class:`mmdet.models.backbones.resnet.BasicBlock` whose convs hand
    their per-sample bias to the norm after them."""

    def forward(self, x):

        def _inner_forward(x):
            out, out_sum = relu_then_sum(
                self.relu, conv_then_norm(self.conv1, self.norm1, x),
                self.conv2)
            out = conv_then_norm(self.conv2, self.norm2, out, out_sum)
            identity = x if self.downsample is None else self.downsample(x)
            out += identity
            return out

        return _run(self, _inner_forward, x)


class DynamicBottleneck(Bottleneck):
    """:class:`mmdet.models.backbones.resnet.Bottleneck` (plugins
    included) whose convs hand their per-sample bias to the norm after
    them."""

    def forward(self, x):

        def _inner_forward(x):
            out, out_sum = self._relu_for(
                conv_then_norm(self.conv1, self.norm1, x), self.conv2)
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

        return _run(self, _inner_forward, x)

    def _relu_for(self, x, conv):
        """``relu(x)`` and its sums for ``conv`` (None where a plugin comes
        between them and changes its input)."""
        if self.with_plugins:
            return self.relu(x), None
        return relu_then_sum(self.relu, x, conv)


#: MMDetection's block -> the one that hands biases to its norms
DYNAMIC_BLOCKS = {BasicBlock: DynamicBasicBlock, Bottleneck: DynamicBottleneck}
