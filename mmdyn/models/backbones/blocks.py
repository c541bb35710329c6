"""MMDetection's ResNet blocks and mmcv's ConvModule with each conv and the
operations after it applied by :func:`mmdyn.ops.conv_norm.conv_norm_act`: a
dynamic conv's per-sample bias (DCD, where its fused op folds it) is then
added by the eval-mode BatchNorm, in the pass that the norm makes anyway,
and at inference at a large batch the conv's kernel applies the norm, the
residual and the ReLU (ReLU6) as it writes its output.
The layers, names and arguments are MMDetection's; with any other conv or
norm they compute exactly what MMDetection's blocks do."""
from typing import Optional

import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from torch import Tensor

from ..._compat import has_hooks
from ...ops.conv_norm import conv_norm_act


def _checkpointed(block, inner_forward, x: Tensor) -> Tensor:
    if block.with_cp and x.requires_grad:
        return cp.checkpoint(inner_forward, x, use_reentrant=False)
    return inner_forward(x)


class DynamicBasicBlock(BasicBlock):
    """:class:`mmdet.models.backbones.resnet.BasicBlock` whose convs hand
    their per-sample bias to the norm after them."""

    def forward(self, x: Tensor) -> Tensor:

        def inner_forward(x):
            out = conv_norm_act(self.conv1, self.norm1, x, act=self.relu)
            identity = x if self.downsample is None else self.downsample(x)
            return conv_norm_act(self.conv2, self.norm2, out, identity,
                                 self.relu)

        return _checkpointed(self, inner_forward, x)


class DynamicBottleneck(Bottleneck):
    """:class:`mmdet.models.backbones.resnet.Bottleneck` (plugins
    included) whose convs hand their per-sample bias to the norm after
    them."""

    def forward(self, x: Tensor) -> Tensor:

        def inner_forward(x):
            out = conv_norm_act(self.conv1, self.norm1, x, act=self.relu)
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = conv_norm_act(self.conv2, self.norm2, out, act=self.relu)
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv2_plugin_names)
            identity = x if self.downsample is None else self.downsample(x)
            if not self.with_plugins:
                return conv_norm_act(self.conv3, self.norm3, out, identity,
                                     self.relu)
            out = conv_norm_act(self.conv3, self.norm3, out)
            out = self.forward_plugin(out, self.after_conv3_plugin_names)
            return self.relu(out + identity)

        return _checkpointed(self, inner_forward, x)


#: MMDetection's block -> the one that hands biases to its norms
DYNAMIC_BLOCKS = {BasicBlock: DynamicBasicBlock, Bottleneck: DynamicBottleneck}


def conv_module_forward(module: ConvModule, x: Tensor,
                        residual: Optional[Tensor] = None) -> Tensor:
    """``module(x) + residual`` (no residual where None) for mmcv's
    ConvModule, through :func:`~mmdyn.ops.conv_norm.conv_norm_act` where
    the conv and norm come in that order (and without explicit padding,
    mmcv's ``efficient_conv_bn_eval`` or hooks, which only ``module(x)``
    runs); the residual goes there too where no activation follows the
    norm."""
    if has_hooks([module]) or not (
            module.with_norm and not module.with_explicit_padding
            and tuple(module.order[:2]) == ('conv', 'norm')
            and getattr(module, 'efficient_conv_bn_eval_forward',
                        None) is None):
        out = module(x)
    elif module.with_activation and module.order[2] == 'act':
        out = conv_norm_act(module.conv, module.norm, x,
                            act=module.activate)
    elif not module.with_activation:
        return conv_norm_act(module.conv, module.norm, x, residual)
    else:
        out = conv_norm_act(module.conv, module.norm, x)
    return out if residual is None else out + residual
