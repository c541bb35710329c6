# ResNet-50 with ODConv (4x); see r50-odconv-1x.py.
_base_ = './r50-odconv-1x.py'
backbone = dict(
    kernel_num=4,
    init_cfg=dict(checkpoint='checkpoints/odconv/od_resnet50_4x.pth.tar'))
