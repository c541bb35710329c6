"""Test-time augmentation for ``tools/test.py --tta``, as MMDetection's own
tools/test.py sets it up."""
import copy
import warnings

from mmengine.config import Config, ConfigDict

#: MMDetection's default when a config has no ``tta_model``
DEFAULT_TTA_MODEL = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))


def enable_tta(cfg: Config) -> Config:
    """Wrap ``cfg.model`` in the config's ``tta_model`` and test with its
    ``tta_pipeline``; where the config has none, MMDetection's defaults
    (``DetTTAModel`` merging by NMS; the test pipeline with its last step
    replaced by a horizontal flip and no flip, each packed), with a
    warning."""
    if 'tta_model' not in cfg:
        warnings.warn('--tta: the config has no tta_model; using '
                      "MMDetection's default DetTTAModel (NMS 0.5)")
        cfg.tta_model = copy.deepcopy(DEFAULT_TTA_MODEL)
    if 'tta_pipeline' not in cfg:
        warnings.warn('--tta: the config has no tta_pipeline; using the '
                      'test pipeline with and without a horizontal flip')
        dataset = cfg.test_dataloader.dataset
        while 'dataset' in dataset:
            dataset = dataset['dataset']
        pipeline = copy.deepcopy(dataset.pipeline)
        pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[
                [dict(type='RandomFlip', prob=1.),
                 dict(type='RandomFlip', prob=0.)],
                [dict(type='PackDetInputs',
                      meta_keys=('img_id', 'img_path', 'ori_shape',
                                 'img_shape', 'scale_factor', 'flip',
                                 'flip_direction'))],
            ])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg
