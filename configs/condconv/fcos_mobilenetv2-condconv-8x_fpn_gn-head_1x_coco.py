# FCOS (GN head), MobileNetV2 (1.0x) with CondConv (8x), FPN, 1x schedule, COCO
# 2017: a one-stage detector on the same backbone as the Table 4 rows.
# MMDetection's fcos_r50-caffe_fpn_gn-head_1x_coco with only the backbone and
# the FPN input channels and the image normalisation (the backbones' ImageNet
# weights are PyTorch-style, not Caffe-style) changed.
_base_ = [
    '../_base_/fcos_pytorch-style.py',
    '../_base_/backbones/mobilenetv2-condconv-8x.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
model = dict(
    backbone={{_base_.backbone}},
    neck=dict(in_channels={{_base_.neck_in_channels}}))
