"""Test (evaluate) a detector: MMDetection's tools/test.py with mmdyn
imported.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show] [--show-dir DIR] [--wait-time S] [--tta]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
        [--partial-load] [--trust-checkpoint FILE]
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse
import os.path as osp

import mmdyn  # noqa: F401  (layers, backbones, weights-only loading)
from mmdyn.datasets import prepare_demo_dataset
from mmdyn.engine import (build_runner, distributed_shut_down_at_exit,
                          enable_tta, load_tool_config, parse_runner_args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where to save the metrics')
    parser.add_argument('--out', help='dump predictions to this .pkl file')
    parser.add_argument('--show', action='store_true',
                        help='show each image with its predictions')
    parser.add_argument('--show-dir', help='draw the predictions on the '
                        'images and save them to this folder (inside the '
                        'work dir\'s timestamped folder if relative)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown (--show)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation: the config\'s '
                        'tta_model and tta_pipeline, or MMDetection\'s '
                        'horizontal-flip default')
    return parse_runner_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir,
                           args.launcher, args.partial_load)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit('--out must be a .pkl file')
        cfg.test_evaluator = [cfg.test_evaluator] if isinstance(
            cfg.test_evaluator, dict) else list(cfg.test_evaluator)
        cfg.test_evaluator.append(dict(type='DumpDetResults',
                                       out_file_path=args.out))
    if args.show or args.show_dir:
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        cfg = enable_tta(cfg)
    prepare_demo_dataset(cfg)
    with distributed_shut_down_at_exit():
        build_runner(cfg).test()


if __name__ == '__main__':
    main()
