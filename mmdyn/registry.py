"""mmdyn's model registry: a child of MMDetection's, so a config can name a
backbone ``'mmdyn.ODResNet'`` or, once mmdyn is imported, just
``'ODResNet'``."""
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMDET_MODELS, scope='mmdyn',
                  locations=['mmdyn.models'])


def register_model(cls):
    """Register ``cls`` under its name in mmdyn's registry and in
    MMDetection's."""
    MODELS.register_module(module=cls)
    MMDET_MODELS.register_module(module=cls)
    return cls
