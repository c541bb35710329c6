"""Convert a COCO detector checkpoint in MMDetection 2.x format, such as the
ODConv authors' released Faster / Mask R-CNN models, for MMDetection 3.x with
an mmdyn config, so that tools/test.py evaluates it.

    python tools/model_converters/mmdet2_detector_to_mmdyn.py \
        mask_rcnn_odconv4x_r50_fpn_1x_coco.pth \
        checkpoints/mask-rcnn_r50-odconv-4x_fpn_1x_coco.pth
    python tools/test.py \
        configs/odconv/mask-rcnn_r50-odconv-4x_fpn_1x_coco.py \
        checkpoints/mask-rcnn_r50-odconv-4x_fpn_1x_coco.pth

The config is recognised from the checkpoint (backbone method, kernel
number, mask head) unless ``--config`` names one. The backbone is mapped
from the authors' layout and its ImageNet classifier dropped; every other
key must fit the config's detector exactly. The file is read with
weights-only loading and never overwritten without ``--force``.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse
import os.path as osp
import sys

from mmdyn.engine import add_trust_argument

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='the MMDetection 2.x checkpoint')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument(
        '--config',
        help='the mmdyn / MMDetection 3.x config it is for; default: the '
        'Table-4 config recognised from the checkpoint')
    parser.add_argument('--force', action='store_true',
                        help='overwrite dst if it exists')
    add_trust_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.exists(args.dst) and not args.force:
        raise SystemExit(f'{args.dst} exists; pass --force to overwrite it')
    import mmdyn  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmdyn.checkpoint import (CheckpointError, extract_state_dict,
                                  load_checkpoint_file, save_checkpoint)
    from mmdyn.checkpoint.detector import (load_mmdet2_detector_state_dict,
                                           table_4_config_for)
    try:
        checkpoint = load_checkpoint_file(args.src)
        state_dict = extract_state_dict(checkpoint, args.src)
        config = args.config
        if config is None:
            name = table_4_config_for(state_dict)
            if name is None:
                raise SystemExit(
                    f'error: {args.src} fits none of the Table-4 configs; '
                    'name the config it was trained with: --config CONFIG')
            config = osp.join(REPO, 'configs', name)
            print(f'config: configs/{name}')
        cfg = Config.fromfile(config)
        cfg.model.backbone.init_cfg = None
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        detector = MODELS.build(cfg.model)
        report = load_mmdet2_detector_state_dict(detector, state_dict,
                                                 args.src)
    except (CheckpointError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    print(report.summary())
    for key in report.dropped:
        print(f'  dropped: backbone.{key}')
    meta = {'source': osp.basename(args.src), 'config': osp.basename(config)}
    classes = (checkpoint.get('meta') or {}).get('CLASSES')
    if classes:
        meta['dataset_meta'] = {'classes': tuple(classes)}
    save_checkpoint({'state_dict': detector.state_dict(), 'meta': meta},
                    args.dst)
    print(f'wrote {args.dst}; evaluate it with:\n'
          f'    python tools/test.py {osp.relpath(config)} {args.dst}')


if __name__ == '__main__':
    sys.exit(main())
