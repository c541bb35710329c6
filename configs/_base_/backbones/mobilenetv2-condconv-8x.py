# MobileNetV2 (1.0x) with CondConv (8 experts) in its last six blocks. No
# ImageNet checkpoint was released: put your own at the path below, or start
# from a static one.
_base_ = './mobilenetv2.py'
backbone = dict(
    type='CondConvMobileNetV2',
    kernel_num=8,
    temperature=1.0,
    init_cfg=dict(
        checkpoint='checkpoints/condconv/condconv_mobilenetv2_100_8x.pth'))
