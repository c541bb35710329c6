"""Speed and memory of detectors and backbones, timed as MMEngine trains and
tests them.

A detector is built from its config as ``tools/train.py`` builds it: the
model (``MODELS.build(cfg.model)``, ``init_weights()``) and the optimizer
wrapper of the config (``build_optim_wrapper(model, cfg.optim_wrapper)``,
so AMP, gradient clipping and paramwise settings are the config's). A
training step is ``model.train_step(data, optim_wrapper)`` after
``model.train()`` (which applies ``norm_eval`` and ``frozen_stages``), with
the losses read back as MMEngine's ``RuntimeInfoHook`` reads them; an
inference is ``model.test_step(data)`` after ``model.eval()``. The data is a
synthetic batch in the format of MMDetection's data loaders (uint8 images
and ``DetDataSample`` s with boxes, and masks for mask heads), which the
model's own ``data_preprocessor`` normalises, pads and moves to the device.

Variants of a model are config overrides (``model.backbone.cuda_graph=True``),
never patches of a built model. Every model of a run is built first and then
timed in turns (one step of each, again and again), so that a machine that
speeds up or slows down during the run does so for all of them alike; each
row reports the median, the quartiles and the ratio to the run's first
model.

This module imports no part of mmdyn: a config's ``custom_imports`` brings
it in. The same file can therefore time another checkout of mmdyn (e.g. an
older commit through ``git worktree``) when run by its path with that
checkout first on ``PYTHONPATH``.

Command line: ``tools/analysis_tools/benchmark.py`` (or ``python -m
mmdyn.analysis.benchmark``), see :func:`main`.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

#: what is timed -> (images per step, (height, width)) by default
DEFAULT_SIZES = {
    'detector': (2, (800, 1333)),  # MMDetection's 1x schedule, per GPU
    'backbone': (200, (224, 224)),  # the papers' ImageNet inference
}


# ------------------------------------------------------------------ timing


def summarize(samples_ms: Sequence[float]) -> Dict[str, float]:
    """Median and quartiles (the spread) of a list of times in ms."""
    ordered = sorted(samples_ms)
    if len(ordered) > 1:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method='inclusive')
    else:
        q1 = q3 = ordered[0]
    return dict(median_ms=statistics.median(ordered), q1_ms=q1, q3_ms=q3,
                min_ms=ordered[0], max_ms=ordered[-1], n=len(ordered))


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call of ``fn`` in ms: CUDA events on a GPU (the
    device finished before and after), ``time.perf_counter`` elsewhere."""
    _synchronize(device)
    if device.type == 'cuda':
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def time_in_turns(fns: Sequence[Callable[[], object]], device: torch.device,
                  warmup: int, reps: int) -> List[Dict[str, float]]:
    """:func:`summarize` d times of several functions, called in turns:
    ``warmup`` calls of each, then ``reps`` rounds of one call of each."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: List[List[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, mine in zip(fns, samples):
            mine.append(time_once_ms(fn, device))
    return [summarize(s) for s in samples]


def peak_memory_mib(fn: Callable[[], object], device: torch.device,
                    held_bytes: int = 0) -> float:
    """Memory one call of ``fn`` allocates above what was allocated when it
    began (its peak), plus ``held_bytes`` that it uses without allocating
    them (a CUDA graph's pool, reserved at capture), in MiB; NaN off
    CUDA."""
    if device.type != 'cuda':
        return float('nan')
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before
            + held_bytes) / 2**20


# ----------------------------------------------------------------- configs


def parse_overrides(items: Sequence[str]) -> dict:
    """``['a.b=1', 'c=[1,2]']`` -> ``{'a.b': 1, 'c': [1, 2]}``, parsed as
    MMEngine's ``--cfg-options`` parses them."""
    from mmengine.config import DictAction
    for item in items:
        if '=' not in item:
            raise ValueError(f'{item!r} is not KEY=VALUE (a config override, '
                             'as --cfg-options takes)')
    if not items:
        return {}
    parser = argparse.ArgumentParser()
    parser.add_argument('options', nargs='+', action=DictAction)
    return parser.parse_args(list(items)).options


def load_config(path: str, overrides: Optional[dict] = None):
    """``path`` with ``overrides`` merged, its Pretrained backbone weights
    left out (speed does not depend on them, and they may not be on this
    machine): the backbone starts from its own initialisation."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if overrides:
        cfg.merge_from_dict(overrides)
    backbone = cfg.model.get('backbone', {})
    init_cfg = backbone.get('init_cfg')
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        backbone.init_cfg = None
    return cfg


def model_label(path: str, overrides: Sequence[str]) -> str:
    name = osp.splitext(osp.basename(path))[0]
    return ' '.join([name, *overrides])


# --------------------------------------------------------------- detectors


def num_classes(model_cfg) -> int:
    """The number of classes a detector config's heads predict (80 if it
    names none)."""
    found = []

    def search(node):
        if isinstance(node, dict):
            if isinstance(node.get('num_classes'), int):
                found.append(node['num_classes'])
            for value in node.values():
                search(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                search(value)

    search(model_cfg)
    return min(found) if found else 80


def synthetic_batch(batch_size: int, height: int, width: int,
                    with_masks: bool, classes: int = 80,
                    seed: int = 0) -> dict:
    """A batch as MMDetection's data loaders give it: uint8 CHW images on
    the CPU and ``DetDataSample`` s with 8 boxes (and masks) each, of
    ``classes`` classes."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    generator = torch.Generator().manual_seed(seed)
    images, samples = [], []
    size = torch.tensor([width, height], dtype=torch.float32)
    for _ in range(batch_size):
        images.append(torch.randint(0, 256, (3, height, width),
                                    generator=generator, dtype=torch.uint8))
        top_left = torch.rand(8, 2, generator=generator) * (size - 16)
        extent = 16 + torch.rand(8, 2, generator=generator) * (
            size - 16 - top_left)
        boxes = torch.cat([top_left, top_left + extent], 1)
        instances = InstanceData(
            bboxes=boxes,
            labels=torch.randint(0, classes, (8, ), generator=generator))
        if with_masks:
            masks = torch.zeros(8, height, width, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            instances.masks = BitmapMasks(masks.numpy(), height, width)
        sample = DetDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width),
            scale_factor=(1.0, 1.0), flip=False, flip_direction=None))
        sample.gt_instances = instances
        samples.append(sample)
    return dict(inputs=images, data_samples=samples)


def iteration_schedulers(cfg, optim_wrapper) -> list:
    """The config's parameter schedulers that change within an epoch
    (``by_epoch=False``, e.g. the learning-rate warm-up), built as the
    Runner builds them: a run's first steps train at the warm-up's
    learning rate, as a real training's do (at the full rate, a randomly
    initialised detector can diverge within steps, and its heads then do
    other work)."""
    from mmengine.registry import PARAM_SCHEDULERS
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    return [PARAM_SCHEDULERS.build(dict(s),
                                   default_args=dict(optimizer=optim_wrapper))
            for s in schedulers if not s.get('by_epoch', True)]


class DetectorSteps:
    """A detector built from ``cfg`` on ``device``, with the config's
    optimizer wrapper: its training step and its inference, as MMEngine's
    loops run them.

    Args:
        cfg (Config): A detector config (see :func:`load_config`).
        device (torch.device): Where the model runs.
        batch_size (int): Images per training step (inference: 1).
        image_shape (tuple[int, int]): Height and width of the images.
        seed (int): Seed of the model's initialisation and of the data.
    """

    def __init__(self, cfg, device: torch.device, batch_size: int,
                 image_shape: Tuple[int, int], seed: int = 0) -> None:
        from mmdet.registry import MODELS
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import init_default_scope
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        torch.manual_seed(seed)
        model = MODELS.build(cfg.model)
        model.init_weights()
        self.model = model.to(device)
        self.optim_wrapper = build_optim_wrapper(self.model,
                                                 cfg.optim_wrapper)
        self.schedulers = iteration_schedulers(cfg, self.optim_wrapper)
        with_masks = bool(cfg.model.get('roi_head', {}).get('mask_head'))
        classes = num_classes(cfg.model)
        self.train_data = synthetic_batch(batch_size, *image_shape,
                                          with_masks, classes, seed)
        self.test_data = synthetic_batch(1, *image_shape, False, classes,
                                         seed + 1)
        self.losses: List[Dict[str, float]] = []
        self._mode: Optional[str] = None

    def train_step(self) -> None:
        self._set_mode('train')
        log_vars = self.model.train_step(self.train_data, self.optim_wrapper)
        for scheduler in self.schedulers:  # as ParamSchedulerHook does
            scheduler.step()
        # as RuntimeInfoHook after each iteration: the values read back
        self.losses.append({k: float(v.item() if torch.is_tensor(v) else v)
                            for k, v in log_vars.items()})

    def test_step(self) -> None:
        self._set_mode('test')
        with torch.no_grad():
            self.model.test_step(self.test_data)

    def _set_mode(self, mode: str) -> None:
        """``model.train()`` before the first training step and
        ``model.eval()`` before the first inference, as MMEngine's loops
        call them where the mode changes, not every step (for a dynamic
        backbone it walks hundreds of modules). A model is built in
        training mode, but only ``train()`` applies ``norm_eval`` and
        ``frozen_stages``: it must be called."""
        if self._mode != mode:
            self.model.train(mode == 'train')
            self._mode = mode

    def losses_finite(self) -> bool:
        return all(v == v and abs(v) != float('inf')
                   for losses in self.losses for v in losses.values())


def _quiet_logger() -> None:
    """Building a model logs every initialised parameter at INFO: the
    benchmark's own logger, current from now on, shows warnings only."""
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmdyn-benchmark', log_level='WARNING')


def _graphed_forward(model):
    """The backbone's CUDA-graphed forward (mmdyn's ``CUDAGraphForward``,
    found without importing mmdyn), or None."""
    return vars(model.backbone).get('forward')


def _graph_stats(model) -> Optional[dict]:
    """Captures and replays of the backbone's CUDA graphs, if it has them."""
    stats = getattr(_graphed_forward(model), 'stats', None)
    return None if stats is None else dict(stats)


def _graph_memory_bytes(model) -> int:
    """Device memory the backbone's CUDA graphs hold between steps (their
    pool, which every replay writes, and their static buffers), 0 without
    graphs. A step allocates none of it, so the step's own peak leaves it
    out."""
    memory_bytes = getattr(_graphed_forward(model), 'memory_bytes', None)
    return 0 if memory_bytes is None else memory_bytes()


def _configs(models: Sequence[Tuple[str, Sequence[str]]],
             cfg_options: Optional[dict]):
    """Each model's config (see :func:`load_config`) and the start of its
    result row."""
    for path, overrides in models:
        cfg = load_config(path, {**(cfg_options or {}),
                                 **parse_overrides(overrides)})
        yield cfg, dict(label=model_label(path, overrides), config=path,
                        overrides=list(overrides))


def benchmark_detectors(models: Sequence[Tuple[str, Sequence[str]]],
                        device: torch.device,
                        batch_size: int = 2,
                        image_shape: Tuple[int, int] = (800, 1333),
                        warmup: int = 5,
                        reps: int = 20,
                        cfg_options: Optional[dict] = None) -> List[dict]:
    """Time the training step and the inference of each detector.

    Args:
        models: ``(config path, overrides)`` pairs, overrides as
            ``KEY=VALUE`` strings; the first is the reference of the
            ratios.
        cfg_options (dict, optional): Overrides for every model.

    Returns:
        list[dict]: One row per model: its label, the training step's and
        the inference's :func:`summarize` d times, peak memory, ratios to
        the first model and whether every loss was finite.
    """
    _quiet_logger()
    steps, rows = [], []
    for cfg, row in _configs(models, cfg_options):
        # as MMEngine's Runner sets it up from the (first) config
        if not steps and device.type == 'cuda':
            torch.backends.cudnn.benchmark = bool(
                cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
        steps.append(DetectorSteps(cfg, device, batch_size, image_shape))
        rows.append(row)
        print(f'built {row["label"]}', file=sys.stderr)
    trains = [s.train_step for s in steps]
    tests = [s.test_step for s in steps]
    train_times = time_in_turns(trains, device, warmup, reps)
    for row, step, train, times in zip(rows, steps, trains, train_times):
        row.update(train=times,
                   train_mem_mib=peak_memory_mib(
                       train, device, _graph_memory_bytes(step.model)),
                   losses_finite=step.losses_finite())
    test_times = time_in_turns(tests, device, warmup, reps)
    for row, step, test, times in zip(rows, steps, tests, test_times):
        row.update(test=times,
                   test_mem_mib=peak_memory_mib(
                       test, device, _graph_memory_bytes(step.model)))
        stats = _graph_stats(step.model)
        if stats is not None:
            row['cuda_graph_stats'] = stats
    for row in rows:
        for what in ('train', 'test'):
            row[f'{what}_ratio'] = row[what]['median_ms'] / \
                rows[0][what]['median_ms']
    return rows


# --------------------------------------------------------------- backbones


def benchmark_backbones(models: Sequence[Tuple[str, Sequence[str]]],
                        device: torch.device,
                        batch_size: int = 200,
                        image_shape: Tuple[int, int] = (224, 224),
                        warmup: int = 5,
                        reps: int = 20,
                        cfg_options: Optional[dict] = None,
                        dtype: Optional[torch.dtype] = None,
                        channels_last: bool = False) -> List[dict]:
    """Inference throughput of the backbones of detector configs (the
    papers' protocol: batch 200, 224x224), in eval mode, under autocast to
    ``dtype`` if given; arguments as :func:`benchmark_detectors`."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    _quiet_logger()
    memory_format = torch.channels_last if channels_last else \
        torch.contiguous_format
    calls, rows = [], []
    for cfg, row in _configs(models, cfg_options):
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        torch.manual_seed(0)
        backbone = MODELS.build(cfg.model.backbone)
        backbone.init_weights()
        backbone = backbone.to(device)
        backbone.eval()  # mmdet backbones' train() returns None
        for module in backbone.modules():  # 4-d weights (not weight banks)
            if isinstance(module, torch.nn.Conv2d):
                module.to(memory_format=memory_format)
        x = torch.randn(batch_size, 3, *image_shape, device=device).to(
            memory_format=memory_format)

        def infer(backbone=backbone, x=x):
            with torch.no_grad(), torch.autocast(
                    device.type, dtype=dtype or torch.float32,
                    enabled=dtype is not None):
                backbone(x)

        calls.append(infer)
        rows.append(row)
    for row, times in zip(rows, time_in_turns(calls, device, warmup, reps)):
        row.update(infer=times,
                   images_per_s=batch_size / times['median_ms'] * 1e3)
    for row in rows:
        row['throughput_ratio'] = row['images_per_s'] / \
            rows[0]['images_per_s']
    return rows


# ------------------------------------------------------------------ tables


def _ms(times: dict) -> str:
    return (f"{times['median_ms']:.1f} ms "
            f"[{times['q1_ms']:.1f}-{times['q3_ms']:.1f}]")


def detector_table(rows: List[dict]) -> str:
    lines = [
        '| model | train step, median [quartiles] | vs first | train '
        'memory | inference | vs first | losses finite |',
        '|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {_ms(r['train'])} | {r['train_ratio']:.3f}x "
            f"| {r['train_mem_mib']:.0f} MiB | {_ms(r['test'])} | "
            f"{r['test_ratio']:.3f}x | "
            f"{'yes' if r['losses_finite'] else 'NO'} |")
    return '\n'.join(lines)


def backbone_table(rows: List[dict]) -> str:
    lines = ['| model | inference, median [quartiles] | images/s | '
             'throughput vs first |', '|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['label']} | {_ms(r['infer'])} | "
                     f"{r['images_per_s']:.0f} | "
                     f"{r['throughput_ratio']:.3f}x |")
    return '\n'.join(lines)


def environment() -> dict:
    """Device, versions and time of a run, recorded with its results."""
    import mmengine
    device = torch.cuda.get_device_name() if torch.cuda.is_available() \
        else 'cpu'
    return dict(device=device, torch=torch.__version__,
                mmengine=mmengine.__version__,
                date=time.strftime('%Y-%m-%d %H:%M:%S %Z'))


# --------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Time detectors (training step and inference) or '
        'backbones (inference) built from configs, in turns in one run.')
    parser.add_argument('what', choices=list(DEFAULT_SIZES))
    parser.add_argument(
        '--model', action='append', nargs='+', required=True,
        metavar=('CONFIG', 'KEY=VALUE'),
        help='a config and its overrides, e.g. --model configs/odconv/'
        'faster-rcnn_r50-odconv-1x_fpn_1x_coco.py model.backbone.cuda_graph'
        '=True; repeat for each model; the first is the reference')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='overrides for every model')
    parser.add_argument('--amp', action='store_true',
                        help='detector: AmpOptimWrapper (float16), as '
                        'tools/train.py --amp')
    parser.add_argument('--dtype', choices=['float16', 'bfloat16'],
                        help='backbone: autocast to this type')
    parser.add_argument('--channels-last', action='store_true',
                        help='backbone: channels-last inputs and weights')
    parser.add_argument('--batch-size', type=int,
                        help="default: the protocol's (detector 2, "
                        'backbone 200)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--device', default='cuda'
                        if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write the results to this new JSON '
                        'file')
    args = parser.parse_args(argv)
    if args.out and osp.exists(args.out):
        parser.error(f'--out {args.out} exists: name a new file')
    if args.amp and args.what != 'detector':
        parser.error('--amp: detectors only (backbones: --dtype)')
    if (args.dtype or args.channels_last) and args.what != 'backbone':
        parser.error('--dtype, --channels-last: backbones only')
    batch, shape = DEFAULT_SIZES[args.what]
    args.batch_size = args.batch_size or batch
    args.shape = tuple(args.shape or shape)
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    models = [(m[0], m[1:]) for m in args.model]
    options = parse_overrides(args.cfg_options)
    if args.amp:
        options.update({'optim_wrapper.type': 'AmpOptimWrapper',
                        'optim_wrapper.loss_scale': 'dynamic'})
    common = dict(device=device, batch_size=args.batch_size,
                  image_shape=args.shape, warmup=args.warmup, reps=args.reps,
                  cfg_options=options)
    if args.what == 'detector':
        rows = benchmark_detectors(models, **common)
        table = detector_table(rows)
    else:
        rows = benchmark_backbones(
            models, dtype=getattr(torch, args.dtype) if args.dtype else None,
            channels_last=args.channels_last, **common)
        table = backbone_table(rows)
    env = environment()
    command = ' '.join(['python', 'tools/analysis_tools/benchmark.py',
                        *(sys.argv[1:] if argv is None else argv)])
    print(f"\n# {args.what}: {env['device']}, torch {env['torch']}, "
          f"{env['date']}; batch {args.batch_size}, "
          f'{args.shape[0]}x{args.shape[1]}, {args.reps} rounds in turns\n')
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'x') as f:
            json.dump(dict(environment=env, command=command,
                           arguments=vars(args), rows=rows),
                      f, indent=1)
    return rows


if __name__ == '__main__':
    main()
