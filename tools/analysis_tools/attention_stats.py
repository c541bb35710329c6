"""What the attentions of a trained detector's dynamic convs do on its
validation images: statistics per layer and figures.

    python tools/analysis_tools/attention_stats.py CONFIG CHECKPOINT \
        [--num-images N] [--out DIR] [--cfg-options KEY=VALUE ...] [--force]
        [--trust-checkpoint FILE]

Runs the detector over the first N images of the config's test set
(the demo dataset is generated if the config names one), records every
dynamic conv's attentions through forward hooks, and writes to DIR
(default: work_dirs/<config name>/attention_stats):

- attention_stats.json: per layer and attention, the distribution (count,
  mean, std, min, max, 5/25/50/75/95th percentiles), the mean per kernel
  position (spatial) or per kernel (kernel), and for DCD the normalised
  variance of Φ(x) (the DCD paper's Fig. 6);
- attention_stats.csv: the same distributions, one row per layer and
  attention;
- PNG figures (see mmdyn.analysis.plot_attention_summary), in the spirit of
  the ODConv paper's Fig. 6.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse
import csv
import json
import os
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

from mmdyn.engine import add_trust_argument

CSV_FIELDS = ('layer', 'type', 'attention', 'count', 'mean', 'std', 'min',
              'q05', 'q25', 'q50', 'q75', 'q95', 'max')
OUTPUTS = ('attention_stats.json', 'attention_stats.csv', 'spatial.png',
           'kernel.png', 'channel_filter.png', 'dcd.png')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--num-images', type=int, default=100)
    parser.add_argument('--out', help='output folder')
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--force', action='store_true',
                        help='overwrite earlier outputs in --out')
    add_trust_argument(parser)
    args = parser.parse_args(argv)
    if args.num_images < 1:
        parser.error(f'--num-images must be >= 1, got {args.num_images}')
    return args


def write_csv(summary, path):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        for entry in summary:
            for kind, stats in entry['attentions'].items():
                writer.writerow(dict(
                    {k: stats[k] for k in CSV_FIELDS[3:]},
                    layer=entry['layer'], type=entry['type'],
                    attention=kind))


def main(argv=None):
    args = parse_args(argv)
    import mmdyn  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner, load_checkpoint
    from mmengine.utils import ProgressBar

    from mmdyn.analysis import (AttentionRecorder, plot_attention_summary,
                                summarize)
    from mmdyn.datasets import prepare_demo_dataset
    from mmdyn.engine import load_tool_config

    cfg = load_tool_config(args.config, args.cfg_options)
    out = args.out or osp.join(cfg.work_dir, 'attention_stats')
    existing = [name for name in OUTPUTS if osp.exists(osp.join(out, name))]
    if existing and not args.force:
        raise SystemExit(f'{out} already holds {", ".join(existing)}; pass '
                         '--force to overwrite them or give another --out')
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    prepare_demo_dataset(cfg)
    cfg.model.backbone.init_cfg = None  # the checkpoint has the weights
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.to(args.device).eval()
    loader = cfg.test_dataloader.copy()
    loader.update(num_workers=0, persistent_workers=False)
    loader = Runner.build_dataloader(loader)
    total = min(args.num_images, len(loader.dataset))
    progress = ProgressBar(total, file=sys.stderr)
    seen = 0
    with AttentionRecorder(model) as recorder, torch.no_grad():
        for data in loader:
            room = total - seen
            data = {k: v[:room] for k, v in data.items()}
            model.test_step(data)
            for _ in range(len(data['inputs'])):
                progress.update()
            seen += len(data['inputs'])
            if seen >= total:
                break
    sys.stderr.write('\n')
    summary = summarize(recorder)
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, 'attention_stats.json'), 'w') as f:
        json.dump(dict(config=args.config, checkpoint=args.checkpoint,
                       images=seen, layers=summary), f, indent=1)
    write_csv(summary, osp.join(out, 'attention_stats.csv'))
    name = osp.splitext(osp.basename(args.config))[0]
    figures = plot_attention_summary(summary, out, title=name)
    kinds = sorted({k for e in summary for k in e['attentions']})
    print(f'{len(summary)} dynamic layers, {seen} images, attentions: '
          f'{", ".join(kinds)}')
    for path in [osp.join(out, 'attention_stats.json'),
                 osp.join(out, 'attention_stats.csv'), *figures]:
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
