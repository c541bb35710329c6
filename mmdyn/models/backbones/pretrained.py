"""``init_cfg=dict(type='Pretrained', ...)`` through mmdyn's checked
loader."""
from mmengine.logging import MMLogger

from ...checkpoint import load_backbone_checkpoint


def without_empty_pretrained(init_cfg):
    """``init_cfg`` without a ``Pretrained`` entry that names no checkpoint
    (None if nothing is left). Such an entry means "from scratch" while
    leaving the file to ``--cfg-options model.backbone.init_cfg.checkpoint``
    (a key of None cannot be set); the backbone then gets the default
    initialisation of MMDetection's, which it only chooses for
    ``init_cfg=None``."""
    cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
    kept = [c for c in cfgs if c and not (c.get('type') == 'Pretrained'
                                          and c.get('checkpoint') is None)]
    if len(kept) == len([c for c in cfgs if c]):
        return init_cfg
    return kept or None


class CheckedPretrainedMixin:
    """Makes a backbone load its ``Pretrained`` init_cfg with
    :func:`mmdyn.checkpoint.load_backbone_checkpoint` instead of MMEngine's
    ``PretrainedInit``, which loads with ``strict=False`` and would leave
    wrong or mis-shaped keys randomly initialised with only a warning.

    The authors' checkpoints (``module.`` prefixes, ``features.N``
    MobileNetV2 layouts, classifiers) are recognised and mapped; static
    checkpoints are inflated; ``prefix`` (e.g. ``'backbone.'``) selects part
    of a larger checkpoint. Other init_cfg entries run first, as in MMEngine.
    """

    def init_weights(self) -> None:
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [
            self.init_cfg
        ] if self.init_cfg else []
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        if not pretrained:
            super().init_weights()
            return
        original = self.init_cfg
        self.init_cfg = [c for c in cfgs if c.get('type') != 'Pretrained'
                         ] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = original
        cfg = pretrained[-1]
        report = load_backbone_checkpoint(
            self, cfg['checkpoint'], prefix=cfg.get('prefix'),
            map_location=cfg.get('map_location', 'cpu'))
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: {report.summary()}')
