"""mmcv's ConvModule whose conv hands its per-sample bias to its norm."""
from mmcv.cnn import ConvModule

from ...layers.bias_into_norm import conv_then_norm


class DynamicConvModule(ConvModule):
    """:class:`mmcv.cnn.ConvModule` (same arguments, layers and names)
    that applies its conv and norm with :func:`mmdyn.layers.conv_then_norm`
    when they come in that order: a dynamic conv's per-sample bias (folded
    DCD) is then added by the eval-mode BatchNorm, in the pass that the norm
    makes anyway. Any other order, explicit padding or mmcv's
    ``efficient_conv_bn_eval`` runs ConvModule's own forward."""

    def forward(self, x, activate: bool = True, norm: bool = True):
        if not (norm and self.with_norm and not self.with_explicit_padding
                and tuple(self.order[:2]) == ('conv', 'norm')
                and getattr(self, 'efficient_conv_bn_eval_forward',
                            None) is None):
            return super().forward(x, activate, norm)
        out = conv_then_norm(self.conv, self.norm, x)
        if activate and self.with_activation:
            out = self.activate(out)
        return out
