# Mask R-CNN with an ODConv (4x) ResNet-18 on the demo-shapes dataset (see
# configs/_base_/demo-shapes_300it.py for the data and the schedule).
# Trained from scratch in minutes on a CPU: the neck and heads are mmdet's,
# narrowed to 128 channels (COCO configs keep 256), and fewer proposals and
# RoIs are sampled per image.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/demo-shapes_300it.py'
]
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

width = 128  # channels of the FPN outputs and the heads

model = dict(
    backbone=dict(
        _delete_=True,
        type='ODResNet',
        depth=18,
        kernel_num=4,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,  # trained from scratch: BatchNorm must learn
        # from scratch, but a Pretrained entry all the same, so that
        # --cfg-options model.backbone.init_cfg.checkpoint=FILE starts from
        # FILE as it does on the COCO configs
        init_cfg=dict(type='Pretrained', checkpoint=None)),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=3),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(
            in_channels=width, conv_out_channels=width, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
