"""Convert an ImageNet checkpoint released by the ODConv or DCD authors (or a
static ResNet / MobileNetV2 one) into a plain mmdyn backbone checkpoint.

    python tools/model_converters/official_to_mmdyn.py \
        od_resnet50_4x.pth.tar checkpoints/odconv4x_resnet50_mmdyn.pth

The backbone is recognised from the keys (method, depth or width, kernel
number) unless ``--backbone`` names it; every key is checked. The output
holds the backbone's state dict, loadable with
``init_cfg=dict(type='Pretrained', checkpoint=...)``.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse
import ast
import os.path as osp
import sys

from mmdyn.engine import add_trust_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='the released checkpoint')
    parser.add_argument('dst', help='where to write the mmdyn checkpoint')
    parser.add_argument(
        '--backbone',
        help="backbone config as a Python dict, e.g. \"dict(type='ODResNet', "
        "depth=50, kernel_num=4)\"; default: recognised from the keys")
    parser.add_argument('--force', action='store_true',
                        help='overwrite dst if it exists')
    add_trust_argument(parser)
    return parser.parse_args(argv)


def parse_backbone(text):
    try:
        node = ast.parse(text, mode='eval').body
        if isinstance(node, ast.Call) and getattr(node.func, 'id',
                                                  None) == 'dict':
            return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        value = ast.literal_eval(node)
    except (SyntaxError, ValueError) as error:
        raise SystemExit(f'--backbone: not a dict literal ({error}): {text}')
    if not isinstance(value, dict) or 'type' not in value:
        raise SystemExit(f'--backbone: needs a dict with a "type": {text}')
    return value


def main(argv=None):
    args = parse_args(argv)
    if osp.exists(args.dst) and not args.force:
        raise SystemExit(f'{args.dst} exists; pass --force to overwrite it')
    import mmdyn  # noqa: F401  (registers the backbones)
    from mmdet.registry import MODELS

    from mmdyn.checkpoint import (CheckpointError, extract_state_dict,
                                  load_backbone_state_dict,
                                  load_checkpoint_file, recognise_backbone,
                                  save_checkpoint)
    try:
        state_dict = extract_state_dict(load_checkpoint_file(args.src),
                                        args.src)
        cfg = parse_backbone(args.backbone) if args.backbone \
            else recognise_backbone(state_dict)
        backbone = MODELS.build(cfg)
        report = load_backbone_state_dict(backbone, state_dict, args.src)
    except (CheckpointError, FileNotFoundError) as error:
        raise SystemExit(f'error: {error}')
    print(f'backbone: {cfg}')
    print(report.summary())
    if report.inflated:
        print(f'inflated from static kernels: {len(report.inflated)} layers')
    for key in report.dropped:
        print(f'  dropped: {key}')
    save_checkpoint({'state_dict': backbone.state_dict(),
                     'meta': {'mmdyn_backbone': repr(cfg),
                              'source': osp.basename(args.src)}}, args.dst)
    print(f'wrote {args.dst} ({len(backbone.state_dict())} tensors)')


if __name__ == '__main__':
    sys.exit(main())
