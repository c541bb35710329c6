# MobileNetV2 (1.0x) as an FPN backbone: mmdet's MobileNetV2 and its ImageNet
# weights, with the ODConv paper's detection setting (frozen stem and first
# stage, BatchNorm in eval mode). Outputs 24, 32, 96 and 1280 channels at
# strides 4, 8, 16 and 32.
backbone = dict(
    _delete_=True,
    type='MobileNetV2',
    widen_factor=1.0,
    out_indices=(1, 2, 4, 7),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    init_cfg=dict(
        type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
neck_in_channels = [24, 32, 96, 1280]
