# ResNet-50 with ODConv (1x) in every bottleneck conv, from the authors'
# ImageNet checkpoint (OSVAI/ODConv), frozen stem and first stage, BatchNorm
# (attention branches included) in eval mode: the ODConv paper's detection
# setting. Temperature 1, no annealing.
backbone = dict(
    type='ODResNet',
    depth=50,
    style='pytorch',
    norm_cfg=dict(type='BN', requires_grad=True),
    kernel_num=1,
    temperature=1.0,
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/odconv/od_resnet50_1x.pth.tar'))
