# Faster R-CNN with an ODConv (4x) ResNet-18 on the demo-shapes dataset
# (boxes only); see the Mask R-CNN demo config for the rest.
_base_ = './mask-rcnn_r18-odconv-4x_fpn_demo-shapes.py'

model = dict(
    type='FasterRCNN',
    roi_head=dict(mask_roi_extractor=None, mask_head=None),
    train_cfg=dict(rcnn=dict(mask_size=None)))
train_pipeline = {{_base_.bbox_train_pipeline}}
test_pipeline = {{_base_.bbox_test_pipeline}}
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
