"""Keep or delete: each optional optimisation of the dynamic layers, timed
with and without it in the Faster R-CNN R50-FPN step with CUDA graphs.

An experiment on this commit's code, not a user tool: it switches each
optimisation off in a built detector (instance attributes, or module-level
switches set around that detector's steps), which is the one thing the
benchmark module (``mmdyn/analysis/benchmark.py``) never does. Every other
part of the timing is that module's: MMEngine's ``train_step`` with the
config's optimizer wrapper after ``model.train()``, ``test_step`` after
``model.eval()``, all variants of a method timed in turns in one process.

    python benchmarks/keep_or_delete.py METHOD [--reps N] [--out FILE.json]

METHOD is odconv-1x, odconv-4x or dcd; the models are the eager static
detector (the reference), the graphed static one, the method as it is and
one copy per optimisation it has, without it.
"""
import argparse
import contextlib
import json
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'mmdyn', 'analysis'))
import benchmark  # noqa: E402  (by path: imports no part of mmdyn)

CONFIGS = {
    'static': 'configs/baseline/faster-rcnn_r50_fpn_1x_coco.py',
    'odconv-1x': 'configs/odconv/faster-rcnn_r50-odconv-1x_fpn_1x_coco.py',
    'odconv-4x': 'configs/odconv/faster-rcnn_r50-odconv-4x_fpn_1x_coco.py',
    'dcd': 'configs/dcd/faster-rcnn_r50-dcd_fpn_1x_coco.py',
}
GRAPHS = ['model.backbone.cuda_graph=True']

#: optimisation -> what it is, and the methods that have it
OPTIMISATIONS = {
    'relu-sums': ('every ReLU before a dynamic conv sums its output for '
                  "the conv's attention (inside blocks and across them)",
                  ('odconv-1x', 'odconv-4x', 'dcd')),
    'relu-sums-across': ("the sums handed across blocks (a block's last "
                         "ReLU for the next block's conv1)",
                         ('odconv-1x', 'odconv-4x', 'dcd')),
    'bias-split': ("DCD's folded per-sample bias added by the eval "
                   'BatchNorm after the conv', ('dcd', )),
    'side-stream': ("DCD's parameter-only products on a side CUDA stream",
                    ('dcd', )),
    'conv-precision-1x1': ('per-sample 1x1 products (bmm) in the TF32 '
                           'setting of convolutions, not of matmuls',
                           ('odconv-1x', 'odconv-4x', 'dcd')),
    'bmm-1x1': ('per-sample 1x1 convs as one bmm (without it: the grouped '
                'conv every other kernel size uses)',
                ('odconv-1x', 'odconv-4x', 'dcd')),
    'fold-vs-scale': ('per layer, attentions folded into per-sample kernels '
                      'only where those are smaller than the activations '
                      '(without it: folded everywhere)',
                      ('odconv-1x', 'odconv-4x', 'dcd')),
}

#: the optimisations switched off around the steps of the model running now
OFF = set()


def install_switches():
    """Module-level switches read while a step runs: what is in OFF."""
    from mmdyn.layers import base, conv_precision, side_stream
    from mmdyn.layers.functional import per_sample_conv2d

    init = side_stream.SideStream.__init__

    def side_stream_init(self, device):
        init(self, device)
        if 'side-stream' in OFF:
            self.active = False

    side_stream.SideStream.__init__ = side_stream_init

    differs = conv_precision.precision_differs
    conv_precision.precision_differs = lambda pixels: (
        'conv-precision-1x1' not in OFF and differs(pixels))

    def grouped(x, weight, bias, stride, padding, dilation, groups,
                loop=False):
        if 'bmm-1x1' not in OFF or weight.shape[-2:] != (1, 1):
            return per_sample_conv2d(x, weight, bias, stride, padding,
                                     dilation, groups, loop)
        batch, in_channels, height, width = x.shape
        out = torch.nn.functional.conv2d(
            x.reshape(1, batch * in_channels, height, width),
            weight.reshape(-1, *weight.shape[2:]),
            None if bias is None else bias.reshape(-1), stride, padding,
            dilation, batch * groups)
        return out.view(batch, weight.shape[1], *out.shape[-2:])

    base.per_sample_conv2d = grouped

    from mmdet.models.backbones import ResNet
    from mmdyn.models.backbones.dynamic_resnet import DynamicResNet
    forward = DynamicResNet.forward

    def resnet_forward(self, x):
        if 'relu-sums-across' in OFF:
            return ResNet.forward(self, x)
        return forward(self, x)

    DynamicResNet.forward = resnet_forward


def _no_input_sum(x):
    return False


def switch_off_in_model(model, name):
    """The optimisations that live on the built model's layers."""
    from mmdyn.layers import DCDConv2d, DynamicConv2d
    for module in model.modules():
        if name == 'relu-sums' and isinstance(module, DynamicConv2d):
            module.takes_input_sum = _no_input_sum
        if name == 'bias-split' and isinstance(module, DCDConv2d):
            module.forward_split_bias = None
        if name == 'fold-vs-scale' and isinstance(module, DynamicConv2d):
            module.fold_attentions = True


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('method', choices=['odconv-1x', 'odconv-4x', 'dcd'])
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--reps', type=int, default=30)
    parser.add_argument('--shape', type=int, nargs=2, default=(800, 1333))
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--out')
    args = parser.parse_args(argv)
    import mmdyn  # noqa: F401
    install_switches()
    names = [n for n, (_, methods) in OPTIMISATIONS.items()
             if args.method in methods]
    # mmdet's ResNet takes no cuda_graph argument: the graphed static
    # detector gets its graphs after it is built
    models = [(CONFIGS['static'], []), (CONFIGS['static'], []),
              (CONFIGS[args.method], GRAPHS)]
    models += [(CONFIGS[args.method], GRAPHS) for _ in names]
    variants = [None, None, None] + names
    built = []

    def wrap(index, fn):
        variant = variants[index]

        def step():
            OFF.clear()
            if variant is not None:
                OFF.add(variant)
            try:
                return fn()
            finally:
                OFF.clear()

        return step

    real_init = benchmark.DetectorSteps.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        index = len(built)
        built.append(self)
        if index == 1:
            from mmdyn import enable_cuda_graph
            enable_cuda_graph(self.model.backbone)
        if variants[index] is not None:
            switch_off_in_model(self.model, variants[index])

    benchmark.DetectorSteps.__init__ = init
    device = torch.device(args.device)
    rows = benchmark.benchmark_detectors(
        models, device, image_shape=tuple(args.shape), warmup=args.warmup,
        reps=args.reps)
    base = rows[2]
    for row, variant in zip(rows, variants):
        row['without'] = variant
        if variant is not None:
            row['label'] += f' without {variant}'
        for what in ('train', 'test'):
            row[f'{what}_vs_as_is'] = row[what]['median_ms'] / \
                base[what]['median_ms']
    rows[1]['label'] += ' (cuda_graph)'
    env = benchmark.environment()
    print(f"\n# {args.method}: {env['device']}, torch {env['torch']}, "
          f"{env['date']}; {args.reps} rounds in turns")
    print(benchmark.detector_table(rows))
    print('\n| without | train vs as is | inference vs as is |\n|---|---|---|')
    for row in rows[3:]:
        print(f"| {row['without']} | {row['train_vs_as_is']:.3f}x | "
              f"{row['test_vs_as_is']:.3f}x |")
    if args.out:
        with open(args.out, 'x') as f:
            json.dump(dict(environment=env, method=args.method,
                           command=' '.join(sys.argv), rows=rows), f,
                      indent=1)


if __name__ == '__main__':
    main()
