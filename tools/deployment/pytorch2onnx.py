"""Export a detector's backbone (and neck) to ONNX, check it in ONNX Runtime
against PyTorch, and optionally time both on the CPU.

    python tools/deployment/pytorch2onnx.py CONFIG [--checkpoint FILE]
        --out FILE.onnx [--part {backbone,backbone+neck}] [--shape H W]
        [--static-batch N] [--no-fuse-conv-bn] [--no-check] [--time N]
        [--overwrite]
        [--cfg-options KEY=VALUE ...]

BatchNorms are folded into the convolutions first (``mmdyn.fuse_conv_bn``).
The exported graph takes the normalised, padded image batch that the
detector's data preprocessor makes (mean and std of the config applied), of
any batch size and size, and returns the backbone's (or neck's) feature
maps: ``out0``, ``out1``, ... What does not export of MMDetection's heads,
and why: docs/deployment.md. Needs ``pip install "mmdyn[deploy]"``.
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse  # noqa: E402
import logging  # noqa: E402
import os.path as osp  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import mmdyn  # noqa: E402,F401  (layers, backbones, weights-only loading)
from mmdyn.analysis.benchmark import time_in_turns  # noqa: E402
from mmdyn.deploy import (compare_with_onnxruntime, export_onnx,  # noqa: E402
                          fuse_conv_bn)
from mmdyn.deploy.onnx import onnxruntime_session, run_onnxruntime  # noqa

#: the largest relative difference between ONNX Runtime and PyTorch that
#: --check accepts (float32)
TOLERANCE = 1e-4


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Export a backbone (and neck) to ONNX and check it in '
        'ONNX Runtime')
    parser.add_argument('config', help='detector config file')
    parser.add_argument('--checkpoint', help='the trained detector; '
                        'without it, the initialised model is exported')
    parser.add_argument('--out', required=True, help='the .onnx file to '
                        'write (an existing file is kept, see --overwrite)')
    parser.add_argument('--part', choices=['backbone', 'backbone+neck'],
                        default='backbone+neck')
    parser.add_argument('--shape', type=int, nargs=2, default=[320, 320],
                        metavar=('H', 'W'), help='size of the example '
                        'input (the exported graph takes any size)')
    parser.add_argument('--static-batch', type=int, metavar='N',
                        help='export for batch size N only: per-sample '
                        'weights are then applied by a grouped conv, which '
                        'ONNX Runtime runs faster than the batched matrix '
                        'product a dynamic batch needs')
    parser.add_argument('--no-fuse-conv-bn', action='store_true',
                        help='keep the BatchNorms')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the comparison with ONNX Runtime')
    parser.add_argument('--time', type=int, default=0, metavar='N',
                        help='time N runs of PyTorch and ONNX Runtime on '
                        'the CPU at the example size, batch 1 (or the '
                        'static batch)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace --out if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, KEY=VALUE')
    args = parser.parse_args(argv)
    if not args.out.endswith('.onnx'):
        parser.error(f'--out must name a .onnx file, got {args.out}')
    if osp.exists(args.out) and not args.overwrite:
        parser.error(f'--out {args.out} exists: name a new file, or pass '
                     '--overwrite to replace it')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'--checkpoint {args.checkpoint}: no such file')
    return args


class Features(nn.Module):
    """The detector's backbone, or backbone and neck: ``extract_feat``."""

    def __init__(self, detector: nn.Module, part: str) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.neck = detector.neck if part == 'backbone+neck' else None

    def forward(self, x):
        features = self.backbone(x)
        return features if self.neck is None else self.neck(features)


def build_features(config, checkpoint, part, cfg_options=None):
    """The detector of ``config`` (weights from ``checkpoint``), its
    ``part`` in eval mode, and the config."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if checkpoint:  # the checkpoint has every weight; nothing else loads
        cfg.model.backbone.init_cfg = None
    detector = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(detector, checkpoint, map_location='cpu',
                        strict=True)
    else:
        detector.init_weights()
        warnings.warn('no --checkpoint: exporting an initialised model')
    if part == 'backbone+neck' and not getattr(detector, 'with_neck', False):
        raise SystemExit(f'{config}: the detector has no neck; use --part '
                         'backbone')
    return Features(detector, part).eval(), cfg


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger('torch.onnx').setLevel(logging.ERROR)
    model, _ = build_features(args.config, args.checkpoint, args.part,
                              args.cfg_options)
    reference = model
    if not args.no_fuse_conv_bn:
        import copy
        model = fuse_conv_bn(copy.deepcopy(model))
    height, width = args.shape
    torch.manual_seed(0)
    batch = args.static_batch or 2
    example = torch.randn(batch, 3, height, width)
    export_onnx(model, example, args.out, overwrite=args.overwrite,
                dynamic_batch=not args.static_batch)
    print(f'exported {args.part} of {args.config} to {args.out} '
          f'({osp.getsize(args.out) / 2**20:.1f} MiB)')
    if not args.no_check:
        inputs = [torch.randn(args.static_batch or 1, 3, height, width),
                  torch.randn(args.static_batch or 3, 3, height + 64,
                              width - 32)]
        error = compare_with_onnxruntime(reference, args.out, inputs)
        sizes = ', '.join(f'{tuple(x.shape)}' for x in inputs)
        print(f'ONNX Runtime against PyTorch (inputs {sizes}): largest '
              f'relative difference {error:.2e}')
        if not error <= TOLERANCE:
            raise SystemExit(f'ONNX Runtime differs from PyTorch by '
                             f'{error:.2e} > {TOLERANCE:g}')
    if args.time:
        x = torch.randn(args.static_batch or 1, 3, height, width)
        session = onnxruntime_session(args.out)
        runs = [('PyTorch', lambda: reference(x))]
        if not args.no_fuse_conv_bn:
            runs.append(('PyTorch, BatchNorms folded', lambda: model(x)))
        runs.append(('ONNX Runtime', lambda: run_onnxruntime(session, x)))
        with torch.no_grad():
            times = time_in_turns([fn for _, fn in runs],
                                  torch.device('cpu'), warmup=1,
                                  reps=args.time)
        print(f'\nCPU latency, {x.shape[0]}x3x{height}x{width}, '
              f'{args.time} runs of each in turns, '
              f'{torch.get_num_threads()} threads (median [min-max]):')
        for (name, _), t in zip(runs, times):
            print(f"  {name}: {t['median_ms']:.1f} ms "
                  f"[{t['min_ms']:.1f}-{t['max_ms']:.1f}]")


if __name__ == '__main__':
    main()
