# Mask R-CNN with an ODConv (4x) ResNet-18 on the demo-shapes dataset, which
# tools/train.py and tools/test.py generate under data/demo_shapes/ when it
# is missing. Trained from scratch in minutes on a CPU: the neck and heads are
# mmdet's, narrowed to 128 channels (COCO configs keep 256), and fewer
# proposals and RoIs are sampled per image.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdyn'], allow_failed_imports=False)

demo_dataset = dict(root='data/demo_shapes/', num_train=200, num_val=50,
                    image_size=128, seed=0)
data_root = demo_dataset['root']
metainfo = dict(classes=('circle', 'square', 'triangle'))
image_scale = (128, 128)
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

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    ann_file=data_root + 'annotations/instances_val.json',
    metric=['bbox', 'segm'])
test_evaluator = val_evaluator

# From scratch at batch 4, AdamW converges much faster than mmdet's SGD.
max_iters = 300
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[220, 280], gamma=0.1),
]
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
# one checkpoint, at the end (weights and AdamW's state: about 570 MB); a
# log line every 5 iterations, within seconds on a CPU, in training and test
default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=max_iters),
    logger=dict(interval=5))
log_processor = dict(by_epoch=False)
auto_scale_lr = dict(base_batch_size=4)
randomness = dict(seed=0)  # the same run on every machine of a kind
# the samplers draw the same numbers at an iteration whether the run was
# resumed or not: --resume continues the run exactly (on a CPU)
custom_hooks = [dict(type='IterationSeedHook')]
