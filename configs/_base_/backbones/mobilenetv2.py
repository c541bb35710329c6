# MobileNetV2 (1.0x) as an FPN backbone: mmdet's MobileNetV2 and its ImageNet
# weights, with the ODConv authors' detection setting: BatchNorm in eval mode
# and everything before the stride-8 stage frozen (their frozen_stages=1
# counts stages by output, features 0-3; mmdet's 2 is the same layers).
# Outputs 24, 32, 96 and 1280 channels at strides 4, 8, 16 and 32.
backbone = dict(
    _delete_=True,
    type='MobileNetV2',
    widen_factor=1.0,
    out_indices=(1, 2, 4, 7),
    frozen_stages=2,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    init_cfg=dict(
        type='Pretrained', checkpoint='open-mmlab://mmdet/mobilenet_v2'))
neck_in_channels = [24, 32, 96, 1280]
