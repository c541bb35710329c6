"""Speed and memory of dynamic convs against static ones, measured in one run.

    python tools/analysis_tools/benchmark.py layers     [--out FILE.json]
    python tools/analysis_tools/benchmark.py backbones  [--out FILE.json]
    python tools/analysis_tools/benchmark.py detectors  [--precision fp16 ...]

``layers``: every conv shape of ResNet-50 and MobileNetV2 (1.0x) at detection
resolution (batch 2, 800x1333 input), each dynamic layer against
``nn.Conv2d`` of the same shape, forward and forward+backward; the totals
weight each shape by how often the backbone has it.
``backbones``: inference throughput at the papers' protocol (batch 200,
224x224, fp32), every method, R50 and MobileNetV2.
``detectors``: Faster R-CNN R50-FPN and MobileNetV2-FPN (the Table-4
configs), a full training step (2 images of 800x1333: forward, backward,
SGD step) and inference (1 image), time and peak memory, in each precision
(autocast; training in fp16 uses a gradient scaler; bf16 covers backbone and
neck only, as mmcv 2.1's RoIAlign has no bfloat16 kernel); a non-finite loss
is reported.

``--profile N`` adds, for the detectors, a profile of one training step:
how many kernels it launches, their GPU time, and its N most expensive
operators and kernels. ``--phases N`` times N more training steps by phase:
how long the CPU takes to issue the forward, the backward and the
optimizer's step, and how long the device then still runs.

Speed settings, to compare in separate runs: ``--per-sample loop`` (one
conv per sample instead of the batch folded into the groups),
``--triton off`` (ODConv and DCD without their fused Triton kernels;
``--triton both`` measures the detectors both ways in one run) and
``--channels-last`` apply to every model. ``--without bias-split
relu-sums`` adds, for the detectors, a copy of each method with that
speed-up of the blocks turned off (DCD's bias added by the BatchNorm; the
ReLU's sums handed to the fused kernels), timed in the same turns.
``--cuda-graph`` (backbones replay CUDA graphs:
:func:`mmdyn.enable_cuda_graph`) and ``--compile`` (``torch.compile`` of
the backbone, in ``--compile-mode``) apply to every
method, the static one too, and the eager static model is measured as well:
it stays the reference of every ratio.

Detectors are all built first and their steps timed in turns, so that a
machine that changes speed during the run changes it for all alike. The
memory of a step is its peak of allocated memory above what was allocated
before it. With ``--cuda-graph``, the activations live in the graphs' pool,
reserved rather than allocated: the tables give what the graphs hold (pool
and static buffers) in a column of its own.

Times are medians of ``--reps`` runs after ``--warmup``, from CUDA events
(``time.perf_counter`` on a CPU); every ratio is to the static model timed
in the same run. Results print as Markdown tables and go to ``--out`` as
JSON.
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import sys
import time
from collections import Counter
from contextlib import nullcontext

import torch
from torch import nn

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

METHODS = {  # name -> (ResNet type, MobileNetV2 type, extra arguments)
    'static': ('mmdet.ResNet', 'mmdet.MobileNetV2', {}),
    'condconv-8x': ('CondConvResNet', 'CondConvMobileNetV2', {}),
    'dyconv-4x': ('DyConvResNet', 'DyConvMobileNetV2', {}),
    'dcd': ('DCDResNet', 'DCDMobileNetV2', {}),
    'odconv-1x': ('ODResNet', 'ODMobileNetV2', dict(kernel_num=1)),
    'odconv-4x': ('ODResNet', 'ODMobileNetV2', dict(kernel_num=4)),
}
LAYERS = {  # name -> (layer type, extra arguments)
    'condconv-8x': ('CondConv2d', dict(kernel_num=8)),
    'dyconv-4x': ('DyConv2d', dict(kernel_num=4)),
    'dcd': ('DCDConv2d', {}),
    'odconv-1x': ('ODConv2d', dict(kernel_num=1)),
    'odconv-4x': ('ODConv2d', dict(kernel_num=4)),
}
PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def measure_in_turns(fns, device, warmup: int, reps: int) -> list:
    """Median times of several functions, called in turns."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, mine in zip(fns, times):
            mine.append(measure_ms(fn, device, 0, 1))
    return [statistics.median(t) for t in times]


def measure_ms(fn, device, warmup: int, reps: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def step_memory_mb(fn, device) -> float:
    """Memory one call of ``fn`` needs on top of what was allocated before
    it (the model, its optimizer state, other models): its peak of
    allocated memory, minus what was allocated when it began."""
    if device.type != 'cuda':
        return float('nan')
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def speed_mode_name(args) -> str:
    return 'cuda-graph' if args.cuda_graph else \
        f'compile-{args.compile_mode}' if args.compile else 'eager'


def measured(args) -> list:
    """(method, mode) pairs to measure: every method in the speed mode,
    and the eager static model, the reference."""
    mode = speed_mode_name(args)
    pairs = [(method, mode) for method in args.methods]
    return pairs if mode == 'eager' else [('static', 'eager')] + pairs


def reference(rows, row, mode: str = 'eager', **same) -> dict:
    """The static row of ``row``'s family in ``mode`` (and ``same``
    keys)."""
    return next(r for r in rows if r['family'] == row['family']
                and r['method'] == 'static' and r['mode'] == mode
                and all(r[k] == row[k] for k in same))


def label(row) -> str:
    text = row['method'] + ('' if row['mode'] == 'eager' else
                            f" ({row['mode']})")
    text += ', no Triton' if row.get('triton') == 'off' else ''
    return text + (f", without {row['without']}" if row.get('without')
                   else '')


#: methods whose layers have fused Triton kernels (``--triton both``)
FUSED_METHODS = ('odconv-1x', 'odconv-4x', 'dcd')


def _without_bias_split(model: nn.Module) -> None:
    """DCD's folded bias added by the conv, not by the BatchNorm after it
    (:func:`mmdyn.layers.conv_then_norm` finds no ``forward_split_bias``)."""
    from mmdyn.layers import DCDConv2d
    for module in model.modules():
        if isinstance(module, DCDConv2d):
            module.forward_split_bias = None


def _takes_no_input_sum(x) -> bool:
    return False


def _without_relu_sums(model: nn.Module) -> None:
    """Every dynamic conv sums its input itself (the ReLU before it is
    MMDetection's, :mod:`mmdyn.layers.relu_then_sum`)."""
    from mmdyn.layers import DynamicConv2d
    for module in model.modules():
        if isinstance(module, DynamicConv2d):
            module.takes_input_sum = _takes_no_input_sum


#: ``--without``: name -> (the methods it applies to, what turns it off in a
#: built detector)
WITHOUT = {
    'bias-split': (('dcd', ), _without_bias_split),
    'relu-sums': (FUSED_METHODS, _without_relu_sums),
}


def speed_mode(backbone: nn.Module, args, mode: str) -> nn.Module:
    """The backbone in ``mode`` (see :func:`speed_mode_name`)."""
    if mode == 'eager':
        return backbone
    if args.cuda_graph:
        from mmdyn import enable_cuda_graph
        enable_cuda_graph(backbone, param_grads=args.param_grads)
    if args.compile:
        return torch.compile(backbone, mode=args.compile_mode)
    return backbone


def build_backbone(family: str, method: str, **kwargs) -> nn.Module:
    from mmdet.registry import MODELS
    resnet, mobilenet, extra = METHODS[method]
    if family == 'r50':
        cfg = dict(type=resnet, depth=50, **extra)
    else:
        cfg = dict(type=mobilenet, out_indices=(1, 2, 4, 7), **extra)
    return initialised(MODELS.build(dict(cfg, **kwargs)))


def in_memory_format(module_or_tensor, args):
    """Channels-last if ``--channels-last`` was given: a tensor, or the
    kernels of a model's ``nn.Conv2d`` layers (the dynamic layers' kernel
    banks have a kernel dimension more and stay as they are)."""
    if not args.channels_last:
        return module_or_tensor
    if isinstance(module_or_tensor, torch.Tensor):
        return module_or_tensor.to(memory_format=torch.channels_last)
    for module in module_or_tensor.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return module_or_tensor


def initialised(model: nn.Module) -> nn.Module:
    """``model`` after its own ``init_weights`` (zero-initialised residual
    BatchNorms as in training: built alone, a deep network with BatchNorm in
    eval mode and untrained statistics can overflow, DCD's quadratic
    Φ(x)-path first)."""
    model.init_weights()
    return model


# ---------------------------------------------------------------- layers


def conv_shapes(family: str, batch: int, height: int, width: int, device):
    """Counter of (in, out, k, stride, padding, groups, H, W) over the
    static backbone's convs but the stem, at this input size."""
    model = build_backbone(family, 'static').to(device)
    model.eval()  # mmdet backbones' train() returns None
    shapes = Counter()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    def record(module, inputs, output):
        if module is not stem:
            h, w = inputs[0].shape[-2:]
            shapes[(module.in_channels, module.out_channels,
                    module.kernel_size[0], module.stride[0],
                    module.padding[0], module.groups, h, w)] += 1

    hooks = [m.register_forward_hook(record) for m in model.modules()
             if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, height, width, device=device))
    for hook in hooks:
        hook.remove()
    return shapes


def bench_layers(args, device):
    from mmcv.cnn import build_conv_layer
    rows = []
    for family in args.families:
        shapes = conv_shapes(family, args.batch, *args.shape, device)
        for shape, count in sorted(shapes.items()):
            cin, cout, k, stride, padding, groups, h, w = shape
            x = torch.randn(args.batch, cin, h, w, device=device)
            x = in_memory_format(x, args).requires_grad_(True)
            geometry = dict(stride=stride, padding=padding, groups=groups,
                            bias=False)
            layers = {'static': nn.Conv2d(cin, cout, k, **geometry)}
            for name in args.methods[1:]:
                kind, extra = LAYERS[name]
                layers[name] = build_conv_layer(
                    dict(type=kind, **extra), cin, cout, k, **geometry)
            row = dict(family=family, shape=list(shape), count=count)
            for name, layer in layers.items():
                layer = in_memory_format(layer.to(device), args)
                layer.eval()  # norm_eval=True, as in detection

                def forward():
                    with torch.no_grad():
                        layer(x)

                def forward_backward():
                    layer(x).sum().backward()

                row[name] = dict(
                    fwd_ms=measure_ms(forward, device, args.warmup,
                                      args.reps),
                    fwd_bwd_ms=measure_ms(forward_backward, device,
                                          args.warmup, args.reps))
            rows.append(row)
            print(f'{family} {shape} x{count} done', file=sys.stderr)
    return dict(rows=rows,
                totals=layer_totals(rows, args.families, args.methods))


def layer_totals(rows, families, methods):
    totals = {}
    for family in families:
        mine = [r for r in rows if r['family'] == family]
        for name in methods:
            for what in ('fwd_ms', 'fwd_bwd_ms'):
                totals.setdefault(family, {}).setdefault(name, {})[what] = \
                    sum(r[name][what] * r['count'] for r in mine)
    return totals


def layer_tables(result) -> str:
    lines = []
    for family, methods in result['totals'].items():
        static = methods['static']
        lines += [
            f'\n{family}: all convs but the stem, batch 2, ratio to '
            'nn.Conv2d (weighted by count)', '',
            '| layer | forward | forward+backward |', '|---|---|---|'
        ]
        for name, t in methods.items():
            lines.append(f"| {name} | {t['fwd_ms'] / static['fwd_ms']:.2f}x "
                         f"| {t['fwd_bwd_ms'] / static['fwd_bwd_ms']:.2f}x |")
    return '\n'.join(lines)


# ------------------------------------------------------------- backbones


def bench_backbones(args, device):
    """The backbones of a family are built first and then timed in turns,
    as the detectors are."""
    rows = []
    for family in args.families:
        x = in_memory_format(
            torch.randn(args.batch, 3, *args.shape, device=device), args)
        infers = []
        for method, mode in measured(args):
            model = in_memory_format(
                build_backbone(family, method).to(device), args)
            model.eval()
            model = speed_mode(model, args, mode)

            def infer(model=model):
                with torch.no_grad():
                    model(x)

            infers.append(infer)
            rows.append(dict(family=family, method=method, mode=mode))
        times = measure_in_turns(infers, device, args.warmup, args.reps)
        for row, ms in zip(rows[-len(infers):], times):
            row.update(ms=ms, images_per_s=args.batch / ms * 1e3)
            print(f'{family} {label(row)}: {row["images_per_s"]:.0f} img/s',
                  file=sys.stderr)
    for row in rows:
        row['ratio'] = row['images_per_s'] / reference(
            rows, row)['images_per_s']
    return dict(rows=rows)


def backbone_table(result, batch, shape) -> str:
    lines = [f'\nbackbone inference, batch {batch}, {shape[0]}x{shape[1]}',
             '', '| backbone | method | img/s | throughput vs static |',
             '|---|---|---|---|']
    for r in result['rows']:
        lines.append(f"| {r['family']} | {label(r)} | "
                     f"{r['images_per_s']:.0f} | {r['ratio']:.2f}x |")
    return '\n'.join(lines)


# ------------------------------------------------------------- detectors


def detector_inputs(detector, batch, height, width, device, with_mask):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(
            img_shape=(height, width), ori_shape=(height, width),
            pad_shape=(height, width), batch_input_shape=(height, width),
            scale_factor=(1.0, 1.0)))
        size = torch.tensor([width, height], dtype=torch.float32)
        top_left = torch.rand(8, 2, generator=generator) * (size - 16)
        extent = 16 + torch.rand(8, 2, generator=generator) * (
            size - 16 - top_left)
        boxes = torch.cat([top_left, top_left + extent], 1)
        gt = InstanceData(bboxes=boxes,
                          labels=torch.randint(0, 80, (8, ),
                                               generator=generator))
        if with_mask:
            masks = torch.zeros(8, height, width, dtype=torch.uint8)
            for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                masks[i, y0:y1, x0:x1] = 1
            gt.masks = BitmapMasks(masks.numpy(), height, width)
        sample.gt_instances = gt
        samples.append(sample.to(device))
    images = [torch.randint(0, 256, (3, height, width), generator=generator,
                            dtype=torch.uint8).to(device)
              for _ in range(batch)]
    return detector.data_preprocessor(
        dict(inputs=images, data_samples=samples), True)


def backbone_autocast(model, dtype):
    """Run ``model.extract_feat`` (backbone and neck) under autocast and
    return float32 features; returns a function that undoes it."""
    original = model.extract_feat

    def extract_feat(inputs):
        with torch.autocast(inputs.device.type, dtype=dtype):
            features = original(inputs)
        return tuple(f.float() for f in features)

    model.extract_feat = extract_feat
    return lambda: delattr(model, 'extract_feat')


def build_detectors(args, device) -> list:
    """Every detector to measure, with its inputs and initial weights."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    built = []
    for family in args.families:
        for method, mode in measured(args):
            part = family if method == 'static' else f'{family}-{method}'
            folder = 'baseline' if method == 'static' else method.split(
                '-')[0]
            config = osp.join(REPO, 'configs', folder,
                              f'{args.detector}_{part}_fpn_1x_coco.py')
            triton = 'off' if args.triton == 'off' else 'auto'
            variants = [(triton, None)]
            if method == 'static':
                variants = [('auto', None)]  # no fused kernels to turn off
            else:
                if args.triton == 'both' and method in FUSED_METHODS:
                    variants.append(('off', None))
                variants += [(triton, name) for name in args.without
                             if method in WITHOUT[name][0]]
            for triton, without in variants:
                cfg = Config.fromfile(config)
                cfg.model.backbone.init_cfg = None
                if triton == 'off':
                    cfg.model.backbone.triton_kernels = False
                torch.manual_seed(0)
                model = in_memory_format(
                    initialised(MODELS.build(cfg.model)).to(device), args)
                if without:
                    WITHOUT[without][1](model)
                model.backbone = speed_mode(model.backbone, args, mode)
                built.append(dict(
                    family=family, method=method, mode=mode, triton=triton,
                    without=without, model=model,
                    data=detector_inputs(model, 2, *args.shape, device,
                                         args.detector == 'mask-rcnn'),
                    single=detector_inputs(model, 1, *args.shape, device,
                                           False),
                    initial=copy.deepcopy(model.state_dict())))
    return built


class DetectorSteps:
    """A training step and an inference of one detector in one precision
    (autocast; fp16 training with a gradient scaler; bf16 on backbone and
    neck only, as mmcv 2.1's RoIAlign has no bfloat16 kernel)."""

    def __init__(self, entry: dict, precision: str, device) -> None:
        self.model, self.data = entry['model'], entry['data']
        self.single = entry['single']
        # every precision trains from the same weights: its finiteness is
        # then its own, not that of the steps the precisions before it took
        self.model.load_state_dict(entry['initial'])
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4,
                                         momentum=0.9)
        self.dtype = PRECISIONS[precision]
        self.device = device
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.dtype == torch.float16)
        self.finite = []
        self.restore = backbone_autocast(self.model, self.dtype) \
            if self.dtype == torch.bfloat16 else (lambda: None)
        # as MMEngine's training loop does before its first step: train()
        # is what applies the backbone's norm_eval (a model is built in
        # training mode, its BatchNorms then with batch statistics)
        self.model.train()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) \
            if self.dtype == torch.float16 else nullcontext()

    def train_step(self, mark=lambda: None):
        """One training step; ``mark()`` is called after each of its
        phases (:data:`PHASES`) but the last."""
        # the mode is set where it changes, as MMEngine's epoch-based loop
        # and its validation loop do; the recursive train() / eval() of a
        # dynamic detector (hundreds of modules) costs milliseconds of CPU,
        # which a training epoch pays once, not every step
        if not self.model.training:
            self.model.train()
        with self.autocast():
            losses = self.model(**self.data, mode='loss')
        loss, _ = self.model.parse_losses(losses)
        mark()
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        mark()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        mark()
        self.finite.append(bool(torch.isfinite(loss)))

    def infer(self):
        if self.model.training:
            self.model.eval()
        with torch.no_grad(), self.autocast():
            self.model(**self.single, mode='predict')


#: the phases of a training step that ``--phases`` times
PHASES = ('forward', 'backward', 'optimizer', 'wait')


def step_phases(steps: 'DetectorSteps', device, reps: int) -> dict:
    """Median wall times (ms) of a training step's phases over ``reps``
    steps: until the forward and the losses, the backward, and the
    optimizer's step have been issued by the CPU, then the wait for the
    device to finish (the finiteness check reads the loss). A phase also
    holds whatever the device made it wait for (the heads read some
    results back), so a long ``wait`` is device work still queued, and a
    step whose phases take longer than its device work is bound by the
    CPU."""
    times = []
    for _ in range(reps):
        synchronize(device)
        marks = [time.perf_counter()]
        steps.train_step(mark=lambda: marks.append(time.perf_counter()))
        synchronize(device)
        marks.append(time.perf_counter())
        times.append([(b - a) * 1e3 for a, b in zip(marks, marks[1:])])
    return {phase: statistics.median(column)
            for phase, column in zip(PHASES, zip(*times))}


def synchronize(device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def bench_detectors(args, device):
    """Every detector is built first; the steps are then timed in turns
    (one of each, again and again), so that a machine that speeds up or
    slows down during the run does so for all of them alike."""
    from mmdyn.models import get_cuda_graph
    built = build_detectors(args, device)
    rows = []
    for precision in args.precision:
        steps = [DetectorSteps(entry, precision, device) for entry in built]
        train_ms = measure_in_turns([s.train_step for s in steps], device,
                                    args.warmup, args.reps)
        infer_ms = measure_in_turns([s.infer for s in steps], device,
                                    args.warmup, args.reps)
        for entry, step, train, infer in zip(built, steps, train_ms,
                                             infer_ms):
            graphs = get_cuda_graph(getattr(entry['model'].backbone,
                                            '_orig_mod',
                                            entry['model'].backbone))
            row = dict(family=entry['family'], method=entry['method'],
                       mode=entry['mode'], triton=entry['triton'],
                       without=entry['without'], precision=precision,
                       train_ms=train, infer_ms=infer,
                       train_mem_mb=step_memory_mb(step.train_step, device),
                       infer_mem_mb=step_memory_mb(step.infer, device))
            if args.profile:
                row['profile'] = profile_step(step.train_step, device,
                                              args.profile)
            if args.phases:
                row['phases_ms'] = step_phases(step, device, args.phases)
            step.restore()
            row['all_losses_finite'] = all(step.finite)
            if graphs is not None:  # how often it captured and replayed
                row['cuda_graph_stats'] = dict(graphs.stats)
                row['cuda_graph_mb'] = graphs.memory_bytes() / 2**20
            rows.append(row)
            print(f"{row['family']} {label(row)} {precision}: train "
                  f"{train:.1f} ms {row['train_mem_mb']:.0f} MiB, inference "
                  f"{infer:.1f} ms, losses finite: "
                  f"{row['all_losses_finite']}"
                  f"{', ' + str(row.get('cuda_graph_stats', ''))}",
                  file=sys.stderr)
    for row in rows:
        static = reference(rows, row, precision=row['precision'])
        for key in ('train_ms', 'train_mem_mb', 'infer_ms', 'infer_mem_mb'):
            row[key.replace('_ms', '_ratio').replace('_mb', '_ratio')] = \
                row[key] / static[key]
        if row['mode'] != 'eager':
            # the eager reference is bound by launching kernels, and moves
            # with the CPU's speed more than graphed or compiled steps do
            same_mode = reference(rows, row, mode=row['mode'],
                                  precision=row['precision'])
            row['mode_ratios'] = dict(
                train=row['train_ms'] / same_mode['train_ms'],
                infer=row['infer_ms'] / same_mode['infer_ms'])
    return dict(rows=rows)


def profile_step(step, device, top: int) -> dict:
    """One call of ``step`` under torch.profiler, summarised by
    :func:`summarise_profile`."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if cuda else [])
    step()
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    return summarise_profile(prof.key_averages(), cuda, top)


def summarise_profile(events, cuda: bool, top: int) -> dict:
    """The number of device kernels (CPU: operators), their total self
    time on the device (CPU: on the CPU), and the ``top`` entries by that
    time, operators and kernels alike (``kind``). An operator's device time
    is that of the kernels it launched (a graph replay's: its graph's
    kernels), which are entries of their own too: the total counts the
    kernels alone, each once."""
    from torch.autograd import DeviceType

    def kind(event):
        return 'operator' if event.device_type == DeviceType.CPU \
            else 'kernel'

    def self_us(event):
        return event.self_device_time_total if cuda else \
            event.self_cpu_time_total

    timed = sorted((e for e in events if self_us(e) > 0), key=self_us,
                   reverse=True)
    counted = [e for e in timed if kind(e) == 'kernel'] if cuda else timed
    return dict(kernels=sum(e.count for e in counted),
                total_ms=sum(self_us(e) for e in counted) / 1e3,
                top=[dict(name=e.key[:80], kind=kind(e), ms=self_us(e) / 1e3,
                          count=e.count) for e in timed[:top]])


def profile_tables(result) -> str:
    lines = []
    for r in result['rows']:
        if 'profile' not in r:
            continue
        prof = r['profile']
        lines += [
            f"\nprofile, training step: {r['family']} {label(r)} "
            f"{r['precision']}: {prof['kernels']} kernels, "
            f"{prof['total_ms']:.1f} ms", '',
            '| operator / kernel | kind | self ms | calls |',
            '|---|---|---|---|'
        ]
        lines += [f"| `{t['name']}` | {t.get('kind', '')} | {t['ms']:.2f} "
                  f"| {t['count']} |" for t in prof['top']]
    return '\n'.join(lines)


def phase_table(result) -> str:
    rows = [r for r in result['rows'] if 'phases_ms' in r]
    if not rows:
        return ''
    lines = ['\ntraining step by phase (ms, medians; CPU until issued, then '
             'the wait for the device)', '',
             '| backbone | method | precision | ' + ' | '.join(PHASES) +
             ' | all |', '|---' * (len(PHASES) + 4) + '|']
    for r in rows:
        phases = [r['phases_ms'][p] for p in PHASES]
        lines.append(f"| {r['family']} | {label(r)} | {r['precision']} | " +
                     ' | '.join(f'{t:.1f}' for t in phases) +
                     f' | {sum(phases):.1f} |')
    return '\n'.join(lines)


def detector_table(result, detector) -> str:
    lines = [
        f'\n{detector}: training step (2 images) and inference (1 image), '
        'ratio to the static backbone (eager; and in the same speed mode: '
        'train / inference)', '',
        '| backbone | method | precision | train step | train step memory '
        '| inference | inference memory | vs static, same mode '
        '| CUDA graphs hold | losses finite |',
        '|---|---|---|---|---|---|---|---|---|---|'
    ]
    for r in result['rows']:
        graphs = f"{r['cuda_graph_mb']:.0f} MiB" if 'cuda_graph_mb' in r \
            else '-'
        mode = r.get('mode_ratios')
        mode = '-' if mode is None else \
            f"{mode['train']:.2f}x / {mode['infer']:.2f}x"
        lines.append(
            f"| {r['family']} | {label(r)} | {r['precision']} | "
            f"{r['train_ms']:.1f} ms ({r['train_ratio']:.2f}x) | "
            f"{r['train_mem_ratio']:.2f}x | {r['infer_ms']:.1f} ms "
            f"({r['infer_ratio']:.2f}x) | {r['infer_mem_ratio']:.2f}x | "
            f"{mode} | {graphs} | "
            f"{'yes' if r['all_losses_finite'] else 'NO'} |")
    return '\n'.join(lines)


# ------------------------------------------------------------------ main


DEFAULTS = {  # what -> (batch, (H, W))
    'layers': (2, (800, 1333)),
    'backbones': (200, (224, 224)),
    'detectors': (2, (800, 1333)),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('what', choices=list(DEFAULTS))
    parser.add_argument('--families', nargs='+',
                        default=['r50', 'mobilenetv2'],
                        choices=['r50', 'mobilenetv2'])
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=list(METHODS),
                        help='static is always measured (the reference)')
    parser.add_argument('--batch', type=int, help='default: the protocol\'s')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--detector', default='faster-rcnn',
                        choices=['faster-rcnn', 'mask-rcnn'])
    parser.add_argument('--precision', nargs='+', default=['fp32'],
                        choices=list(PRECISIONS))
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu')
    parser.add_argument('--per-sample', default='grouped',
                        choices=['grouped', 'loop'],
                        help='how per-sample kernels are applied (the '
                        'per_sample_conv of mmdyn.layers.DynamicConv2d)')
    parser.add_argument('--triton', default='auto',
                        choices=['auto', 'off', 'both'],
                        help='the fused Triton kernels of ODConv and DCD '
                        'where they apply (the triton_kernels of '
                        'mmdyn.layers.DynamicConv2d); detectors: both '
                        'measures those methods with and without them, in '
                        'the same run')
    parser.add_argument('--without', nargs='+', default=[],
                        choices=list(WITHOUT),
                        help='detectors: also measure each method that has '
                        'it with this speed-up turned off (bias-split: '
                        "DCD's bias added by the BatchNorm; relu-sums: the "
                        "ReLU's pixel sums handed to ODConv's and DCD's "
                        'fused kernels), in the same run')
    parser.add_argument('--channels-last', action='store_true',
                        help='models and inputs in channels-last memory '
                        'format (static ones too)')
    parser.add_argument('--cuda-graph', action='store_true',
                        help='every backbone (static too) replays CUDA '
                        'graphs; backbones and detectors only')
    parser.add_argument('--param-grads', choices=['autograd', 'direct'],
                        default='autograd',
                        help='with --cuda-graph: how the replays hand the '
                        'parameters\' gradients over (the param_grads of '
                        'mmdyn.models.CUDAGraphForward)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile every backbone (static too); '
                        'backbones and detectors only')
    parser.add_argument('--compile-mode', default='default',
                        choices=['default', 'reduce-overhead',
                                 'max-autotune'],
                        help='the mode of --compile')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='detectors: profile one training step, and '
                        'list its N most expensive kernels and its kernel '
                        'count')
    parser.add_argument('--phases', type=int, default=0, metavar='N',
                        help='detectors: time the phases of N more training '
                        'steps (forward, backward, optimizer, the wait for '
                        'the device)')
    parser.add_argument('--out', help='write the results to this JSON file')
    args = parser.parse_args(argv)
    if args.compile and args.cuda_graph:
        parser.error('--compile and --cuda-graph: one speed mode per run')
    if args.param_grads != 'autograd' and not args.cuda_graph:
        parser.error('--param-grads: for --cuda-graph only')
    for flag in ('compile', 'cuda_graph'):
        if getattr(args, flag) and args.what == 'layers':
            parser.error(f"--{flag.replace('_', '-')}: for backbones and "
                         'detectors only')
    if args.triton == 'both' and args.what != 'detectors':
        parser.error('--triton both: for detectors only')
    for flag in ('profile', 'phases'):
        if getattr(args, flag) and args.what != 'detectors':
            parser.error(f'--{flag}: for detectors only')
    if args.without and args.what != 'detectors':
        parser.error('--without: for detectors only')
    if 'relu-sums' in args.without and args.triton == 'off':
        parser.error('--without relu-sums: the sums go to the fused Triton '
                     'kernels, which --triton off turns off')
    batch, shape = DEFAULTS[args.what]
    args.batch = args.batch or batch
    args.shape = tuple(args.shape or shape)
    args.methods = ['static'] + [m for m in args.methods if m != 'static']
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.out and osp.exists(args.out):
        raise SystemExit(f'{args.out} exists; give another --out or remove it')
    import mmdyn  # noqa: F401
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    # init_weights logs every parameter at INFO
    MMLogger.get_instance('mmdyn-benchmark', log_level='WARNING')
    from mmdyn.layers import DynamicConv2d
    DynamicConv2d.per_sample_conv = args.per_sample
    DynamicConv2d.triton_kernels = False if args.triton == 'off' else None
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    if args.what == 'layers':
        result = bench_layers(args, device)
        table = layer_tables(result)
    elif args.what == 'backbones':
        result = bench_backbones(args, device)
        table = backbone_table(result, args.batch, args.shape)
    else:
        result = bench_detectors(args, device)
        table = detector_table(result, args.detector) + phase_table(
            result) + profile_tables(result)
    device_name = torch.cuda.get_device_name(device) \
        if device.type == 'cuda' else 'cpu'
    result.update(what=args.what, device=device_name, batch=args.batch,
                  shape=list(args.shape), torch=torch.__version__,
                  per_sample=args.per_sample, triton=args.triton,
                  channels_last=args.channels_last, compile=args.compile,
                  compile_mode=args.compile_mode,
                  cuda_graph=args.cuda_graph, param_grads=args.param_grads,
                  command=' '.join(['python', 'tools/analysis_tools/'
                                    'benchmark.py'] + (argv or sys.argv[1:])))
    print(f'# {device_name}, torch {torch.__version__}')
    print(table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
