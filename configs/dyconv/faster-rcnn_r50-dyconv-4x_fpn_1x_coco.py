# Faster R-CNN, ResNet-50 with DyConv (4x), FPN, 1x schedule, COCO 2017: a row
# of the ODConv paper's Table 4. MMDetection's faster-rcnn_r50_fpn_1x_coco with
# only the backbone changed.
_base_ = [
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    '../_base_/backbones/r50-dyconv-4x.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
model = dict(backbone={{_base_.backbone}})
