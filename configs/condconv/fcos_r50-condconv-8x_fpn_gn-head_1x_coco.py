# FCOS (GN head), ResNet-50 with CondConv (8x), FPN, 1x schedule, COCO 2017: a
# one-stage detector on the same backbone as the Table 4 rows. MMDetection's
# fcos_r50-caffe_fpn_gn-head_1x_coco with only the backbone and the image
# normalisation (the backbones' ImageNet weights are PyTorch-style, not Caffe-
# style) changed.
_base_ = [
    '../_base_/fcos_pytorch-style.py',
    '../_base_/backbones/r50-condconv-8x.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
model = dict(
    backbone={{_base_.backbone}})
