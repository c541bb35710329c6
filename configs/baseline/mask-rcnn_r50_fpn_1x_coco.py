# Mask R-CNN, ResNet-50, FPN, 1x schedule, COCO 2017: a row of the ODConv
# paper's Table 4. MMDetection's own mask-rcnn_r50_fpn_1x_coco, unchanged
# (torchvision ImageNet weights).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)
