# RetinaNet, ResNet-50, FPN, 1x schedule, COCO 2017: a one-stage detector on the
# same backbone as the Table 4 rows. MMDetection's retinanet_r50_fpn_1x_coco
# unchanged (torchvision ImageNet weights).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
