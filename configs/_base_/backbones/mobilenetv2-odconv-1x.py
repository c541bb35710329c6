# MobileNetV2 (1.0x) with ODConv (1x), from the authors' ImageNet checkpoint
# (OSVAI/ODConv). Temperature 1, no annealing.
_base_ = './mobilenetv2.py'
backbone = dict(
    type='ODMobileNetV2',
    kernel_num=1,
    temperature=1.0,
    init_cfg=dict(
        checkpoint='checkpoints/odconv/od_mobilenetv2_100_1x.pth.tar'))
