# ResNet-50 with DyConv (4 kernels) in every conv but the stem. No ImageNet
# checkpoint was released: put your own at the path below, or start from a
# static one (model.backbone.init_cfg.checkpoint=torchvision://resnet50).
backbone = dict(
    type='DyConvResNet',
    depth=50,
    style='pytorch',
    norm_cfg=dict(type='BN', requires_grad=True),
    kernel_num=4,
    temperature=1.0,
    init_cfg=dict(
        type='Pretrained',
        checkpoint='checkpoints/dyconv/dyconv_resnet50_4x.pth'))
