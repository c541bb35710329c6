# MobileNetV2 (1.0x) with DCD in its 1x1 convs, from the authors' ImageNet
# checkpoint (liyunsheng13/dcd, released as mv2x1.0_dcd.pth.tar).
_base_ = './mobilenetv2.py'
backbone = dict(
    type='DCDMobileNetV2',
    temperature=1.0,
    init_cfg=dict(checkpoint='checkpoints/dcd/mv2x1.0_dcd.pth.tar'))
