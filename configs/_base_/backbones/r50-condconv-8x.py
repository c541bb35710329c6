# ResNet-50 with CondConv (8 experts) in every bottleneck conv. No ImageNet
# checkpoint was released: put your own at the path below, or start from a
# static one (model.backbone.init_cfg.checkpoint=torchvision://resnet50).
backbone = dict(
    type='CondConvResNet',
    depth=50,
    style='pytorch',
    norm_cfg=dict(type='BN', requires_grad=True),
    kernel_num=8,
    temperature=1.0,
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/condconv/condconv_resnet50_8x.pth'))
