# MobileNetV2 (1.0x) with DyConv (4 kernels). No ImageNet checkpoint was
# released: put your own at the path below, or start from a static one.
_base_ = './mobilenetv2.py'
backbone = dict(
    type='DyConvMobileNetV2',
    kernel_num=4,
    temperature=1.0,
    init_cfg=dict(
        checkpoint='checkpoints/dyconv/dyconv_mobilenetv2_100_4x.pth'))
