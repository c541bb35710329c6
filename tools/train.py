"""Train a detector: MMDetection's tools/train.py with mmdyn imported.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}] [--partial-load]
        [--trust-checkpoint FILE]
"""
import warnings

# MMEngine imports the deprecated pkg_resources: noise at every start
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

import argparse

from mmengine.config import Config

import mmdyn  # noqa: F401  (layers, backbones, weights-only loading)
from mmdyn.checkpoint import check_pretrained_files
from mmdyn.datasets import prepare_demo_dataset
from mmdyn.engine import (build_runner, distributed_shut_down_at_exit,
                          load_tool_config, parse_runner_args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate with the batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CHECKPOINT, or from the latest checkpoint in the '
        'work dir when no path is given')
    return parse_runner_args(parser, argv)


def build_train_config(args) -> Config:
    cfg = load_tool_config(args.config, args.cfg_options, args.work_dir,
                           args.launcher, args.partial_load)
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP is already on in the config')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in \
                cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr: the config has no '
                             'auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_train_config(args)
    try:
        check_pretrained_files(cfg)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    if prepare_demo_dataset(cfg):
        print(f'generated the demo dataset in {cfg.demo_dataset.root}')
    with distributed_shut_down_at_exit():
        build_runner(cfg).train()


if __name__ == '__main__':
    main()
