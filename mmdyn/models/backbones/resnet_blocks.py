"""MMDetection's residual blocks, with each conv and its norm applied by
:func:`mmdyn.layers.conv_then_norm`: a dynamic conv's per-sample bias (folded
DCD) is then added by the eval-mode BatchNorm after it, in the pass that
the norm makes anyway. The blocks' layers, names and arguments are
MMDetection's; with any other conv or norm they compute exactly what
MMDetection's blocks do."""
import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck

from ...layers.bias_into_norm import conv_then_norm


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
            out = self.relu(conv_then_norm(self.conv1, self.norm1, x))
            out = conv_then_norm(self.conv2, self.norm2, out)
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
            out = self.relu(conv_then_norm(self.conv1, self.norm1, x))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.relu(conv_then_norm(self.conv2, self.norm2, out))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv2_plugin_names)
            out = conv_then_norm(self.conv3, self.norm3, out)
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv3_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            out += identity
            return out

        return _run(self, _inner_forward, x)


#: MMDetection's block -> the one that hands biases to its norms
DYNAMIC_BLOCKS = {BasicBlock: DynamicBasicBlock, Bottleneck: DynamicBottleneck}
