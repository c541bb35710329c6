"""Parameters and multiply-adds of detectors with dynamic backbones, with
MMEngine's jit-traced :class:`~mmengine.analysis.FlopAnalyzer`.

MMEngine counts convolutions, matrix products and norms. A dynamic
convolution also pools its input for the attention branch and multiplies by
its attentions: the input-channel and filter attentions scale activations,
the spatial attention scales the kernel, DCD's Λ(x) scales the static
output. Those products are element-wise multiplications, which MMEngine
skips; :data:`DYNAMIC_CONV_FLOP_HANDLES` counts them (one multiply-add per
output element) and the mean pooling, so that the whole attention branch is
included. The same handles apply to static models, where they add almost
nothing (an element-wise product is rare outside attention).
"""
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import (bmm_flop_jit,
                                           elementwise_flop_counter,
                                           get_shape)
from mmengine.structures import InstanceData
from torch import Tensor, nn


def _tensor_product_flops(inputs, outputs) -> int:
    """One multiply-add per element of an element-wise product's output;
    nothing for products of traced Python numbers (shape arithmetic)."""
    shape = get_shape(outputs[0])
    return int(torch.Size(shape).numel()) if shape else 0


DYNAMIC_CONV_FLOP_HANDLES = {
    # attention scalings: x * a_c, out * a_f, W * a_s, Λ(x) ⊙ (W0 * x)
    'aten::mul': _tensor_product_flops,
    'aten::mul_': _tensor_product_flops,
    # global average pooling of the attention branches (x.mean over H, W),
    # counted like MMEngine counts adaptive_avg_pool2d
    'aten::mean': elementwise_flop_counter(1, 0),
    # a per-sample 1x1 conv with a bias: bias + kernels @ pixels
    'aten::baddbmm': lambda inputs, outputs: bmm_flop_jit(inputs[1:], outputs),
}


def count_flops(model: nn.Module, inputs: Tuple[Tensor, ...]) -> FlopAnalyzer:
    """A :class:`FlopAnalyzer` over ``model(*inputs)`` with
    :data:`DYNAMIC_CONV_FLOP_HANDLES`; ``.total()`` is the MAdd count and
    ``.by_module()`` splits it by submodule.

    The count is that of the authors' formulation, which the papers' MAdds
    describe and the layers' PyTorch operations compute on a CPU: ODConv's
    channel and filter attentions applied to the activations, DCD's static
    conv and low-rank residual apart. (Where mmdyn's fused ops fold them
    into per-sample weights on a GPU, they compute the same with fewer
    MAdds.) The trace runs on the CPU without autograd, as inference does:
    with gradients the attention pooling is a sum and a scaling instead of
    a mean (see :func:`mmdyn.layers.functional.global_avg_pool`).
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(**DYNAMIC_CONV_FLOP_HANDLES)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        analyzer.total()  # traces now; the analyzer keeps what it found
    return analyzer


class _TwoStageTensorForward(nn.Module):
    """A two-stage detector's network on a fixed set of proposals, as
    MMDetection 2.x's ``forward_dummy`` (which the ODConv paper's numbers
    come from): backbone, neck, RPN head, and the RoI head on
    ``num_proposals`` boxes (its mask head on the first 100)."""

    def __init__(self, detector: nn.Module, height: int, width: int,
                 num_proposals: int) -> None:
        super().__init__()
        self.detector = detector
        generator = torch.Generator().manual_seed(0)
        corners = torch.rand(num_proposals, 2, 2, generator=generator)
        corners = corners * torch.tensor([width, height])
        self.proposals = torch.cat(
            [corners.min(1).values, corners.max(1).values], dim=1)

    def forward(self, inputs: Tensor):
        features = self.detector.extract_feat(inputs)
        rpn_outs = self.detector.rpn_head(features)
        proposals = InstanceData(bboxes=self.proposals.to(inputs.device))
        roi_outs = self.detector.roi_head.forward(features, [proposals])
        return rpn_outs, roi_outs


@dataclass
class DetectorComplexity:
    params: int
    backbone_params: int
    flops: int  # multiply-adds
    backbone_flops: int


class _OneStageTensorForward(nn.Module):
    """A one-stage detector's network without post-processing."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: Tensor):
        return self.detector._forward(inputs)


def detector_complexity(detector: nn.Module, shape: Sequence[int] = (1280,
                                                                     800),
                        num_proposals: int = 1000) -> DetectorComplexity:
    """Parameters and MAdds of a detector and of its backbone, for one
    ``shape = (height, width)`` image: a two-stage one (Faster / Mask
    R-CNN) on ``num_proposals`` fixed proposals, a one-stage one (RetinaNet,
    FCOS) through its heads' raw outputs (``mode='tensor'``)."""
    height, width = shape
    if getattr(detector, 'with_rpn', False):
        model = _TwoStageTensorForward(detector.eval(), height, width,
                                       num_proposals)
    else:
        model = _OneStageTensorForward(detector.eval())
    inputs = torch.rand(1, 3, height, width)
    with torch.no_grad():
        analyzer = count_flops(model, (inputs, ))
        flops = analyzer.by_module()
    params = parameter_count(detector)
    return DetectorComplexity(
        params=params[''], backbone_params=params['backbone'],
        flops=flops[''], backbone_flops=flops['detector.backbone'])
