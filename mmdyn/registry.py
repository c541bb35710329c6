"""mmdyn's registries: children of MMDetection's, so a config can name a
backbone ``'mmdyn.ODResNet'`` or, once mmdyn is imported, just
``'ODResNet'`` (the same for hooks)."""
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMDET_MODELS, scope='mmdyn',
                  locations=['mmdyn.models'])
HOOKS = Registry('hook', parent=MMDET_HOOKS, scope='mmdyn',
                 locations=['mmdyn.engine'])


def _register_in(own, mmdet):

    def register(cls):
        own.register_module(module=cls)
        mmdet.register_module(module=cls)
        return cls

    return register


#: register a class in mmdyn's and MMDetection's model registries
register_model = _register_in(MODELS, MMDET_MODELS)
#: register a class in mmdyn's and MMDetection's hook registries
register_hook = _register_in(HOOKS, MMDET_HOOKS)
