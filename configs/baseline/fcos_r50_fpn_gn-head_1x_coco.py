# FCOS (GN head), ResNet-50, FPN, 1x schedule, COCO 2017: a one-stage detector
# on the same backbone as the Table 4 rows. MMDetection's fcos_r50-caffe_fpn_gn-
# head_1x_coco with only the image normalisation (the backbones' ImageNet
# weights are PyTorch-style, not Caffe-style) changed.
_base_ = '../_base_/fcos_pytorch-style.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        style='pytorch',
        norm_cfg=dict(requires_grad=True),
        init_cfg=dict(checkpoint='torchvision://resnet50')))
