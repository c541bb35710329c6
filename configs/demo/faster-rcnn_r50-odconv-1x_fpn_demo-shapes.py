# Faster R-CNN with an ODConv (1x) ResNet-50 on the demo-shapes dataset: the
# backbone of the COCO configs, the data and schedule of the demo. For
# multi-GPU checks (tools/dist_train.sh CONFIG 2); on a CPU it is slow.
_base_ = './faster-rcnn_r18-odconv-4x_fpn_demo-shapes.py'

model = dict(
    backbone=dict(depth=50, kernel_num=1),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
