# RetinaNet, a one-stage detector, with an ODConv (4x) ResNet-18 on the
# demo-shapes dataset (boxes only; see configs/_base_/demo-shapes_300it.py).
# MMDetection's RetinaNet with its FPN and head narrowed to 128 channels, as
# in the Mask R-CNN demo; trained from scratch in minutes on a CPU.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    '../_base_/demo-shapes_300it.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

width = 128  # channels of the FPN outputs and the head

model = dict(
    backbone=dict(
        _delete_=True,
        type='ODResNet',
        depth=18,
        kernel_num=4,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,  # trained from scratch: BatchNorm must learn
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    bbox_head=dict(num_classes=3, in_channels=width, feat_channels=width))

train_pipeline = {{_base_.bbox_train_pipeline}}
test_pipeline = {{_base_.bbox_test_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
