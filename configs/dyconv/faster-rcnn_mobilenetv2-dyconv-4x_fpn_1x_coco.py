# Faster R-CNN, MobileNetV2 (1.0x) with DyConv (4x), FPN, 1x schedule, COCO
# 2017: a row of the ODConv paper's Table 4. MMDetection's faster-
# rcnn_r50_fpn_1x_coco with only the backbone and the FPN input channels
# changed.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/backbones/mobilenetv2-dyconv-4x.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
model = dict(
    backbone={{_base_.backbone}},
    neck=dict(in_channels={{_base_.neck_in_channels}}))
