# MobileNetV2 (1.0x) with ODConv (4x); see mobilenetv2-odconv-1x.py.
_base_ = './mobilenetv2-odconv-1x.py'
backbone = dict(
    kernel_num=4,
    init_cfg=dict(
        checkpoint='checkpoints/odconv/od_mobilenetv2_100_4x.pth.tar'))
