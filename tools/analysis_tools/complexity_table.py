"""Params and MAdds of detectors and their backbones, for many configs at
once, next to the ODConv paper's Table 4.

    python tools/analysis_tools/complexity_table.py [CONFIG ...]
        [--shape H W] [--out FILE.json] [--markdown]

Without configs, all 24 Table-4 configs under configs/ are measured. MAdds
are counted by MMEngine's FlopAnalyzer with mmdyn's handles for the
attention branches of dynamic convs (mmdyn.analysis), on one H x W image
(default 1280 x 800, as MMDetection's get_flops) with 1000 fixed proposals
(MMDetection 2.x's forward_dummy, which the paper's numbers come from).
Parameters exclude the ImageNet classifier, which the paper's whole-detector
counts include (2.05M for ResNet-50, 1.28M for MobileNetV2).
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse
import glob
import json
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# config (relative to configs/) -> Table 4 of the ODConv paper:
# (params M, backbone params M, MAdds G, backbone MAdds G)
_TABLE_4_ROWS = {
    'r50': (43.80, 23.51, 207.07, 76.50, 46.45, 260.14),
    'r50-condconv-8x': (133.75, 113.46, 207.08, 76.51, 136.4, 260.15),
    'r50-dyconv-4x': (119.12, 98.83, 207.23, 76.66, 121.77, 260.30),
    'r50-dcd': (48.08, 27.79, 207.20, 76.63, 50.73, 260.27),
    'r50-odconv-1x': (46.88, 26.59, 207.18, 76.61, 49.53, 260.25),
    'r50-odconv-4x': (108.91, 88.62, 207.42, 76.85, 111.56, 260.49),
    'mobilenetv2': (21.13, 2.22, 122.58, 24.45, 23.78, 175.66),
    'mobilenetv2-condconv-8x': (31.54, 12.63, 122.59, 24.46, 34.19, 175.67),
    'mobilenetv2-dyconv-4x': (30.02, 11.12, 123.01, 24.88, 32.68, 176.09),
    'mobilenetv2-dcd': (23.34, 4.44, 123.01, 24.88, 26.00, 176.09),
    'mobilenetv2-odconv-1x': (22.56, 3.66, 123.00, 24.87, 25.22, 176.08),
    'mobilenetv2-odconv-4x': (29.14, 10.24, 123.02, 24.89, 31.80, 176.10),
}


def paper_row(config: str):
    """Table 4's (params, backbone params, MAdds, backbone MAdds) for a
    config's file name, or None if it is not a Table-4 row."""
    name = osp.basename(config)
    parts = name.split('_')
    row = _TABLE_4_ROWS.get(parts[1]) if len(parts) > 2 else None
    if row is None or parts[0] not in ('faster-rcnn', 'mask-rcnn') or \
            not name.endswith('_fpn_1x_coco.py'):
        return None
    if parts[0] == 'mask-rcnn':
        return row[4], row[1], row[5], row[3]
    return row[:4]


def table_4_configs():
    return sorted(
        glob.glob(osp.join(REPO, 'configs', '*', '*-rcnn_*_fpn_1x_coco.py')))


def measure(config: str, shape):
    from mmdet.registry import MODELS

    from mmdyn.analysis import detector_complexity
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # counting needs no weights
    torch.manual_seed(0)
    detector = MODELS.build(cfg.model)
    result = detector_complexity(detector, shape)
    paper = paper_row(config)
    return dict(
        config=osp.relpath(config, osp.join(REPO, 'configs'))
        if config.startswith(REPO) else config,
        params_m=result.params / 1e6,
        backbone_params_m=result.backbone_params / 1e6,
        madds_g=result.flops / 1e9,
        backbone_madds_g=result.backbone_flops / 1e9,
        paper=None if paper is None else dict(
            zip(('params_m', 'backbone_params_m', 'madds_g',
                 'backbone_madds_g'), paper)))


def format_table(rows, markdown: bool) -> str:
    header = ['config', 'Params (M)', 'backbone (M)', 'MAdds (G)',
              'backbone (G)', 'Table 4 Params', 'Table 4 MAdds']
    lines = []
    for row in rows:
        paper = row['paper']
        lines.append([
            row['config'], f"{row['params_m']:.2f}",
            f"{row['backbone_params_m']:.2f}", f"{row['madds_g']:.2f}",
            f"{row['backbone_madds_g']:.2f}",
            f"{paper['params_m']:.2f} ({paper['backbone_params_m']:.2f})"
            if paper else '-',
            f"{paper['madds_g']:.2f} ({paper['backbone_madds_g']:.2f})"
            if paper else '-'
        ])
    if markdown:
        out = ['| ' + ' | '.join(header) + ' |',
               '|' + '|'.join('---' for _ in header) + '|']
        out += ['| ' + ' | '.join(line) + ' |' for line in lines]
        return '\n'.join(out)
    widths = [max(len(r[i]) for r in [header] + lines)
              for i in range(len(header))]
    return '\n'.join('  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(r, widths)))
                     for r in [header] + lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Params and MAdds of detectors and their backbones')
    parser.add_argument('configs', nargs='*',
                        help='config files (default: the 24 Table-4 configs)')
    parser.add_argument('--shape', type=int, nargs=2, default=[1280, 800],
                        metavar=('H', 'W'), help='input image size')
    parser.add_argument('--out', help='also write the rows to this JSON file')
    parser.add_argument('--markdown', action='store_true',
                        help='print a Markdown table')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import mmdyn  # noqa: F401
    configs = args.configs or table_4_configs()
    missing = [c for c in configs if not osp.isfile(c)]
    if missing:
        raise SystemExit(f'config not found: {", ".join(missing)}')
    if args.out and osp.exists(args.out):
        raise SystemExit(f'{args.out} exists; give another --out or remove it')
    init_default_scope('mmdet')
    rows = []
    progress = ProgressBar(len(configs), file=sys.stderr)
    for config in configs:
        rows.append(measure(config, args.shape))
        progress.update()
    sys.stderr.write('\n')
    print(f'Input {args.shape[0]}x{args.shape[1]}, 1000 proposals; MAdds '
          'include the attention branches of dynamic convs; Params exclude '
          "the ImageNet classifier (Table 4's include it).")
    print(format_table(rows, args.markdown))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(shape=args.shape, rows=rows), f, indent=1)


if __name__ == '__main__':
    main()
