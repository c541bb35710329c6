# RetinaNet, ResNet-50 with CondConv (8x), FPN, 1x schedule, COCO 2017: a one-
# stage detector on the same backbone as the Table 4 rows. MMDetection's
# retinanet_r50_fpn_1x_coco with only the backbone changed.
_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    '../_base_/backbones/r50-condconv-8x.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
model = dict(
    backbone={{_base_.backbone}})
