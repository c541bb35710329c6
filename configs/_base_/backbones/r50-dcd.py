# ResNet-50 with DCD in every bottleneck conv, from the authors' ImageNet
# checkpoint (liyunsheng13/dcd, released as resnet50_dcd.pth.tar).
backbone = dict(
    type='DCDResNet',
    depth=50,
    style='pytorch',
    norm_cfg=dict(type='BN', requires_grad=True),
    temperature=1.0,
    init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/dcd/resnet50_dcd.pth.tar'))
