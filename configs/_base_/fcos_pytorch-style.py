# MMDetection's FCOS (GN head) R50-FPN 1x COCO config, which normalises images
# for Caffe-style ResNet weights, with the PyTorch-style normalisation that the
# backbones' ImageNet weights (torchvision's, the authors') expect. The FCOS
# configs of every method inherit it and change only the backbone.
_base_ = 'mmdet::fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True))
