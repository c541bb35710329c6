from .dynamic_mobilenet_v2 import (CondConvMobileNetV2, DCDMobileNetV2,
                                   DynamicMobileNetV2, DyConvMobileNetV2,
                                   ODMobileNetV2)
from .dynamic_resnet import (CondConvResNet, DCDResNet, DynamicResNet,
                             DyConvResNet, ODResNet)

__all__ = [
    'DynamicResNet', 'ODResNet', 'DCDResNet', 'DyConvResNet',
    'CondConvResNet', 'DynamicMobileNetV2', 'ODMobileNetV2', 'DCDMobileNetV2',
    'DyConvMobileNetV2', 'CondConvMobileNetV2'
]
