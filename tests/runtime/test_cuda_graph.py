"""CUDA graphs of a backbone (mmdyn/runtime/cuda_graph.py).

On the CPU: the pure helpers, the arguments, the eager fallback and the
state a graph is keyed on. On a GPU (``gpu``): real captures, whose outputs
and gradients equal the eager module's, and the dispatching between
captures, replays and eager calls.
"""
import copy
import pickle
import warnings

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope
from torch import nn

from layer_cases import ApplySpy
import mmdyn
from mmdyn.ops import block_diagonal_conv as block_diagonal
from mmdyn.ops import fused_ops, per_sample_conv
from mmdyn.runtime import (CUDAGraphForward, disable_cuda_graph,
                           enable_cuda_graph, get_cuda_graph)
from mmdyn.runtime import cuda_graph as cg

gpu = pytest.mark.gpu

BACKBONES = {
    'static': dict(type='DynamicResNet'),
    'odconv-1x': dict(type='ODResNet', kernel_num=1),
    'odconv-4x': dict(type='ODResNet', kernel_num=4),
    'dcd': dict(type='DCDResNet'),
    'dyconv': dict(type='DyConvResNet'),
    'condconv': dict(type='CondConvResNet'),
}


def build(method='odconv-1x', device='cpu', dtype=torch.float32, **kwargs):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    cfg = dict(BACKBONES[method], depth=50, base_channels=8, stem_channels=8,
               norm_eval=True, frozen_stages=1)
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    model.init_weights()
    with torch.no_grad():  # attentions that differ between samples
        for name, param in model.named_parameters():
            if '_fc.bias' in name:
                param.uniform_(-0.5, 0.5)
    return model.to(device, dtype)


def twins(method='odconv-1x', backbone_args=None, **graph_args):
    """An eager backbone on the GPU and a graphed copy."""
    eager = build(method, 'cuda', **(backbone_args or {}))
    graphed = copy.deepcopy(eager)
    runner = enable_cuda_graph(graphed, **graph_args)
    return eager, graphed, runner


def cuda_randn(*shape, **kwargs):
    return torch.randn(*shape, device='cuda', **kwargs)


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def grads_of(model, outputs, weights=None):
    """The trainable parameters' gradients of a loss of ``outputs``, as
    ``backward()`` leaves them in ``.grad`` (emptied first)."""
    loss = sum((o * w).sum() if weights else o.square().sum()
               for o, w in zip(outputs, weights or outputs))
    return backward_grads(model, loss)


def backward_grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad for p in trainable(model)]


def assert_close_all(actual, expected, **tol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        torch.testing.assert_close(a, e, **tol)


# ------------------------------------------------------------ pure helpers


def test_bucket_shape():
    assert cg.bucket_shape(800, 1216, None) == (800, 1216)
    assert cg.bucket_shape(800, 1216, 128) == (896, 1280)
    assert cg.bucket_shape(768, 1280, 128) == (768, 1280)


def test_crop_sizes():
    sizes = [(2, 8, 32, 48), (2, 16, 16, 24), (2, 32, 4, 6)]
    # strides 4, 8, 32 of a 128x192 bucket, cropped for 96x160
    assert cg.crop_sizes(sizes, (128, 192), (96, 160)) == [
        (2, 8, 24, 40), (2, 16, 12, 20), (2, 32, 3, 5)]
    # 100 is not a multiple of the stride 32: no exact crop
    assert cg.crop_sizes(sizes, (128, 192), (100, 160)) is None
    # outputs without a spatial size only fit the bucket itself
    assert cg.crop_sizes([(2, 10)], (64, 64), (64, 64)) == [(2, 10)]
    assert cg.crop_sizes([(2, 10)], (64, 64), (32, 64)) is None


def test_arena_views_keep_strides_and_alignment():
    a = torch.randn(2, 3, 5, 7).to(memory_format=torch.channels_last)
    b = torch.randn(3, dtype=torch.float16)
    arena = cg._Arena(torch.device('cpu'), cg._Arena.nbytes([a, b]))
    va, vb = arena.views_like([a, b])
    assert va.stride() == a.stride() and vb.dtype == torch.float16
    va.copy_(a)
    vb.copy_(b)
    assert torch.equal(va, a) and torch.equal(vb, b)
    assert (vb.data_ptr() - arena.data.data_ptr()) % cg._Arena.ALIGN == 0


def test_parameters_as_new_leaves():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    model[1].weight = model[0].bias  # shared: one leaf for both
    model[0].weight.requires_grad_(False)
    originals = list(model.parameters())
    with cg._parameters_as_new_leaves(model) as leaves:
        inside = list(model.parameters())
        assert len(leaves) == 3 and model[1].weight is model[0].bias
        for original, leaf in zip(originals, inside):
            assert leaf is not original and leaf.is_leaf
            assert leaf.data_ptr() == original.data_ptr()
            assert leaf.requires_grad == original.requires_grad
    assert list(model.parameters()) == originals


# --------------------------------------------------------- configuration


@pytest.mark.parametrize('kwargs, match', [
    (dict(size_divisor=0), 'size_divisor'),
    (dict(size_divisor=True), 'size_divisor'),
    (dict(max_graphs=0), 'max_graphs'),
    (dict(max_graphs=2.0), 'max_graphs'),
    (dict(warmup_iters=0), 'warmup_iters'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        enable_cuda_graph(nn.Conv2d(3, 3, 1), **kwargs)


@pytest.mark.parametrize('value, match', [
    ('yes', 'must be True, False or a dict'),
    (dict(size_divisor=32, pad=1), r"unknown keys \['pad'\]"),
    (dict(max_graphs=-1), 'max_graphs'),
])
def test_backbone_argument_errors(value, match):
    with pytest.raises(ValueError, match=match):
        build(cuda_graph=value)


def test_with_cp_is_refused():
    with pytest.raises(ValueError, match='with_cp'):
        build(cuda_graph=True, with_cp=True)
    with pytest.raises(ValueError, match='with_cp'):
        enable_cuda_graph(build('static', with_cp=True))


def test_enable_disable_and_state_dict():
    model = build('static')
    keys = list(model.state_dict())
    runner = enable_cuda_graph(model, size_divisor=64)
    assert get_cuda_graph(model) is runner and model.forward is runner
    assert list(model.state_dict()) == keys  # checkpoints load as before
    with pytest.raises(ValueError, match='enabled twice'):
        enable_cuda_graph(model)
    disable_cuda_graph(model)
    assert get_cuda_graph(model) is None
    with pytest.raises(ValueError, match='no CUDA graphs'):
        disable_cuda_graph(model)
    assert mmdyn.enable_cuda_graph is enable_cuda_graph


def test_mobilenet_argument():
    model = MODELS.build(dict(type='ODMobileNetV2', widen_factor=0.5,
                              cuda_graph=dict(max_graphs=4)))
    assert get_cuda_graph(model).max_graphs == 4


def test_copies_keep_their_settings_and_their_own_module():
    graphed = build(cuda_graph=dict(size_divisor=32, max_graphs=3))
    for clone in (copy.deepcopy(graphed),
                  pickle.loads(pickle.dumps(graphed))):
        runner = get_cuda_graph(clone)
        assert runner.module is clone and not runner.graphs
        assert (runner.size_divisor, runner.max_graphs) == (32, 3)


@gpu
def test_copies_start_without_graphs():
    _, graphed, runner = twins()
    graphed(cuda_randn(2, 3, 64, 64))
    assert len(runner.graphs) == 1
    for clone in (copy.deepcopy(graphed),
                  pickle.loads(pickle.dumps(graphed))):
        assert clone.forward.module is clone and not clone.forward.graphs
        assert type(clone.forward) is CUDAGraphForward


def test_cpu_runs_eagerly_with_one_warning():
    eager = build()
    graphed = build(cuda_graph=True)
    x = torch.randn(2, 3, 64, 64)
    with pytest.warns(UserWarning, match='not on a CUDA device'):
        outputs = graphed(x)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        graphed(x)
    assert_close_all(outputs, eager(x), rtol=0, atol=0)
    assert get_cuda_graph(graphed).stats == {'eager_not_cuda': 2}


def test_called_with_other_arguments():
    graphed = build(cuda_graph=True)
    with pytest.raises(TypeError, match='forward\\(x\\)'):
        graphed(torch.randn(2, 3, 32, 32), None)


# ------------------------------------------------------- the graphs' key


def test_state_follows_what_the_forward_reads():
    """The state a graph holds for changes with every submodule's mode,
    which parameters train, any Python value on a dynamic layer (also one
    no list names), the fused-op mode; hooks and training SyncBN make the
    module run eagerly."""
    model = build(cuda_graph=True)
    runner = get_cuda_graph(model)
    model.train()
    reason, state = runner.state()
    assert reason is None and runner.state() == (None, state)
    seen = {state}

    def changed():
        reason, new = runner.state()
        assert reason is None and new not in seen
        seen.add(new)

    model.eval()
    changed()
    mmdyn.set_temperature(model, 2.0)
    changed()
    model.layer4[0].conv2.future_setting = 'new branch'
    changed()
    with fused_ops('off'):
        changed()
    for param in model.layer2.parameters():
        param.requires_grad = False
    changed()
    handle = model.layer1.register_forward_hook(lambda *args: None)
    assert runner.state() == ('hooks', ())
    handle.remove()
    handle = nn.modules.module.register_module_forward_pre_hook(
        lambda *args: None)
    assert runner.state() == ('hooks', ())
    handle.remove()
    model.layer2[0].bn1 = nn.SyncBatchNorm(16)
    runner.clear()
    model.train()  # norm_eval: every BatchNorm in eval mode, SyncBN too
    assert runner.state()[0] is None
    model.layer2[0].bn1.train()
    assert runner.state() == ('sync_bn', ())


# ------------------------------------------------------------ dispatching


@gpu
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('method', ['odconv-1x', 'dcd', 'static'])
def test_replay_node_gives_eager_outputs_and_gradients(method, dtype):
    eager, graphed, runner = twins(method)
    eager.to(dtype)
    graphed.to(dtype)
    eager.train()
    graphed.train()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else {}
    for shape in [(2, 3, 64, 96), (2, 3, 32, 32), (2, 3, 64, 96)]:
        x = cuda_randn(*shape, dtype=dtype)
        expected, actual = eager(x), graphed(x)
        assert_close_all(actual, expected, **tol)
        weights = [torch.randn_like(o) for o in expected]
        # the parameters are in the autograd graph, as eagerly
        loss = sum((o * w).sum() for o, w in zip(actual, weights))
        actual_grads = torch.autograd.grad(loss, trainable(graphed))
        assert_close_all(actual_grads, grads_of(eager, expected, weights),
                         **tol)
    assert runner.stats == {'captures': 2, 'replays': 3}
    # BatchNorm buffers (attention ones included) took the same steps
    assert_close_all(list(graphed.buffers()), list(eager.buffers()), **tol)


@gpu
@pytest.mark.parametrize('batch', [2, 3])
@pytest.mark.parametrize('method', ['odconv-1x', 'dcd'])
def test_replay_with_the_per_sample_conv_forms(method, batch, monkeypatch):
    """At 2 images of 512x512 the first stages' 1x1 layers take the
    block-diagonal form (maps of 128x128 and 64x64), at 3 images the
    per-sample conv op (128x128): graphed equals eager, output and
    gradients."""
    eager, graphed, _ = twins(method)
    eager.train()
    graphed.train()
    spy = ApplySpy(monkeypatch, block_diagonal, 'block_diagonal_conv') \
        if batch == 2 else ApplySpy(monkeypatch, per_sample_conv.PerSampleConv)
    x = cuda_randn(batch, 3, 512, 512)
    expected = eager(x)
    assert spy.calls > 0
    actual = graphed(x)
    assert_close_all(actual, expected, rtol=1e-5, atol=1e-6)
    weights = [torch.randn_like(o) for o in expected]
    loss = sum((o * w).sum() for o, w in zip(actual, weights))
    actual_grads = torch.autograd.grad(loss, trainable(graphed))
    # a parameter's gradient sums over the batch and every pixel, in an
    # order cuDNN's weight-gradient kernels need not keep from one call to
    # the next: compared at its own scale
    for got, want in zip(actual_grads, grads_of(eager, expected, weights),
                         strict=True):
        scale = want.abs().max().clamp(min=1e-12)
        assert (got - want).abs().max() / scale < 1e-4


@gpu
def test_gradients_accumulate_in_grad():
    eager, graphed, _ = twins()
    eager.train()
    graphed.train()
    for _ in range(2):
        x = cuda_randn(2, 3, 64, 64)
        sum(o.sum() for o in eager(x)).backward()
        sum(o.sum() for o in graphed(x)).backward()
    assert_close_all([p.grad for p in trainable(graphed)],
                     [p.grad for p in trainable(eager)], rtol=1e-5,
                     atol=1e-6)


@gpu
@pytest.mark.parametrize('hook', ['hook', 'post_hook'])
def test_parameter_hooks_run(hook):
    eager, graphed, _ = twins()
    eager.train()
    graphed.train()
    calls = []
    if hook == 'hook':
        for model in (eager, graphed):
            trainable(model)[-1].register_hook(lambda grad: grad * 3)
    else:
        trainable(graphed)[-1].register_post_accumulate_grad_hook(
            calls.append)
    x = cuda_randn(2, 3, 32, 32)
    assert_close_all(grads_of(graphed, graphed(x)), grads_of(eager, eager(x)),
                     rtol=1e-5, atol=1e-6)
    assert len(calls) == (hook == 'post_hook')


@gpu
def test_input_gradient():
    eager, graphed, _ = twins('static', dict(frozen_stages=-1))
    x = cuda_randn(2, 3, 64, 64, requires_grad=True)
    expected = torch.autograd.grad(sum(o.sum() for o in eager(x)), x)[0]
    actual = torch.autograd.grad(sum(o.sum() for o in graphed(x)), x)[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@gpu
def test_padding_buckets_and_cropping():
    eager, graphed, runner = twins(size_divisor=64)
    eager.train()
    graphed.train()
    for height, width in [(96, 96), (128, 128), (96, 128), (64, 96)]:
        x = cuda_randn(2, 3, height, width)
        actual = graphed(x)
        # the unpadded input's output sizes, the padded input's numbers
        bucket = cg.bucket_shape(height, width, 64)
        padded = torch.zeros(2, 3, *bucket, device='cuda')
        padded[..., :height, :width] = x
        expected = [o[..., :o.shape[-2] * height // bucket[0],
                      :o.shape[-1] * width // bucket[1]]
                    for o in eager(padded)]
        assert [o.shape for o in actual] == [o.shape for o in eager(x)]
        assert_close_all(actual, expected, rtol=1e-5, atol=1e-6)
        weights = [torch.randn_like(o) for o in expected]
        assert_close_all(grads_of(graphed, actual, weights),
                         grads_of(eager, expected, weights), rtol=1e-5,
                         atol=1e-6)
    assert runner.stats['captures'] == 2  # 128x128, then 64x128
    assert [key[-1] for key in runner.graphs] == [(128, 128), (64, 128)]


@gpu
def test_sizes_that_do_not_crop_get_their_own_graph():
    _, graphed, runner = twins(size_divisor=64)
    with pytest.warns(UserWarning, match='not multiples of the outputs'):
        outputs = graphed(cuda_randn(2, 3, 80, 96))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(20, 24), (10, 12),
                                                      (5, 6), (3, 3)]
    assert [key[-1] for key in runner.graphs] == [(128, 128), (80, 96)]


@gpu
def test_states_get_their_own_graphs():
    _, graphed, runner = twins()
    x = cuda_randn(2, 3, 64, 64)
    graphed.train()
    graphed(x)
    graphed(x)
    graphed.eval()
    with torch.no_grad():
        graphed(x)
    graphed(x)  # eval with grad: a graph with backward
    mmdyn.set_temperature(graphed, 2.0)
    graphed(x)
    for param in graphed.layer2.parameters():
        param.requires_grad = False
    graphed(x)
    assert runner.stats == {'captures': 5, 'replays': 6}
    assert len({key[4] for key in runner.graphs}) == 2  # with / without bwd


@gpu
def test_clear_looks_at_replaced_submodules():
    eager, graphed, runner = twins('static')
    eager.train()
    graphed.train()
    graphed(cuda_randn(2, 3, 32, 32))
    graphed.layer4[0].conv2 = eager.layer4[0].conv2 = nn.Conv2d(
        64, 64, 3, padding=1, bias=False).cuda()
    runner.clear()
    x = cuda_randn(2, 3, 32, 32)
    weights = [torch.randn_like(o) for o in eager(x)]
    actual = grads_of(graphed, graphed(x), weights)
    assert_close_all(actual, grads_of(eager, eager(x), weights), rtol=1e-5,
                     atol=1e-6)


@gpu
def test_moving_the_module_drops_its_graphs():
    _, graphed, runner = twins()
    graphed(cuda_randn(2, 3, 32, 32))
    assert runner.graphs
    graphed.double()
    graphed(cuda_randn(2, 3, 32, 32, dtype=torch.float64))
    assert len(runner.graphs) == 1 and runner.stats['captures'] == 2


@gpu
def test_max_graphs_then_eager():
    eager, graphed, runner = twins(max_graphs=2)
    # the largest shape first: smaller ones fit its static buffers (a
    # larger one would drop the graphs and capture anew)
    for size in (96, 64):
        graphed(cuda_randn(2, 3, size, size))
    x = cuda_randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match='max_graphs \\(2\\)'):
        actual = graphed(x)
    assert_close_all(actual, eager(x), rtol=1e-5, atol=1e-6)
    assert runner.stats['eager_max_graphs'] == 1
    assert len(runner.graphs) == 2


@gpu
def test_second_call_before_backward_runs_eagerly():
    eager, graphed, runner = twins()
    graphed.train()
    eager.train()
    x1, x2 = cuda_randn(2, 3, 32, 32), cuda_randn(2, 3, 32, 32)
    first = graphed(x1)
    with pytest.warns(UserWarning, match='before the backward'):
        second = graphed(x2)
    loss = sum(o.sum() for o in first) + sum(o.square().sum()
                                             for o in second)
    actual = backward_grads(graphed, loss)
    loss = sum(o.sum() for o in eager(x1)) + sum(o.square().sum()
                                                 for o in eager(x2))
    assert_close_all(actual, backward_grads(eager, loss), rtol=1e-5,
                     atol=1e-6)
    assert runner.stats['eager_pending_backward'] == 1
    graphed(x1)  # the backward ran: a replay again
    graphed(x1)  # outputs dropped without backward: nothing is pending
    assert runner.stats['replays'] == 3


@gpu
def test_hooks_and_sync_batch_norm_run_eagerly():
    _, graphed, runner = twins()
    handle = graphed.layer1.register_forward_hook(lambda *args: None)
    with pytest.warns(UserWarning, match='hooks'):
        graphed(cuda_randn(2, 3, 32, 32))
    handle.remove()
    graphed(cuda_randn(2, 3, 32, 32))
    assert runner.stats == {'eager_hooks': 1, 'captures': 1, 'replays': 1}

    model = build('static', 'cuda', norm_eval=False)
    model.layer2[0].bn1 = nn.SyncBatchNorm(16).cuda()
    runner = enable_cuda_graph(model)
    model.train()
    with pytest.warns(UserWarning, match='SyncBatchNorm'):
        model(cuda_randn(2, 3, 32, 32))
    assert runner.stats == {'eager_sync_bn': 1}


@gpu
def test_not_under_compile(monkeypatch):
    _, graphed, runner = twins('static')
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    graphed(cuda_randn(2, 3, 32, 32))
    assert runner.stats == {'eager_compiling': 1}


# -------------------------------------------------------------- on a GPU


@gpu
@pytest.mark.parametrize('method', list(BACKBONES))
def test_gpu_graphs_equal_eager(method):
    eager = build(method, 'cuda')
    graphed = copy.deepcopy(eager)
    runner = enable_cuda_graph(graphed)
    for mode in ('train', 'eval'):
        eager.train(mode == 'train')
        graphed.train(mode == 'train')
        for shape in [(2, 3, 96, 128), (2, 3, 64, 64), (2, 3, 96, 128)]:
            x = torch.randn(shape, device='cuda')
            expected, actual = eager(x), graphed(x)
            assert_close_all(actual, expected, rtol=1e-5, atol=1e-5)
            weights = [torch.randn_like(o) for o in expected]
            assert_close_all(grads_of(graphed, actual, weights),
                             grads_of(eager, expected, weights), rtol=1e-4,
                             atol=1e-5)
        with torch.no_grad():
            x = torch.randn(1, 3, 96, 128, device='cuda')
            assert_close_all(graphed(x), eager(x), rtol=1e-5, atol=1e-5)
    assert_close_all(list(graphed.buffers()), list(eager.buffers()))
    assert runner.stats == {'captures': 6, 'replays': 8}


@gpu
def test_gpu_accumulation_padding_and_autocast():
    eager = build('odconv-4x', 'cuda', norm_eval=False)
    graphed = copy.deepcopy(eager)
    runner = enable_cuda_graph(graphed, size_divisor=64)
    eager.train()
    graphed.train()
    for _ in range(2):
        x = torch.randn(2, 3, 96, 96, device='cuda')
        padded = torch.zeros(2, 3, 128, 128, device='cuda')
        padded[..., :96, :96] = x
        expected = [o[..., :o.shape[-2] * 3 // 4, :o.shape[-1] * 3 // 4]
                    for o in eager(padded)]
        actual = graphed(x)
        assert_close_all(actual, expected, rtol=1e-5, atol=1e-5)
        sum(o.sum() for o in expected).backward()
        sum(o.sum() for o in actual).backward()
    assert_close_all([p.grad for p in trainable(graphed)],
                     [p.grad for p in trainable(eager)], rtol=1e-4,
                     atol=1e-5)
    assert_close_all(list(graphed.buffers()), list(eager.buffers()),
                     rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 3, 128, 128, device='cuda')
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast('cuda', dtype=dtype):
            expected, actual = eager(x), graphed(x)
        assert all(o.dtype == dtype for o in actual)
        assert_close_all(actual, expected, rtol=1e-2, atol=1e-2)
        del actual  # its backward is not coming
    assert runner.stats['captures'] == 3


@gpu
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('method', ['odconv-1x', 'odconv-4x', 'dcd'])
def test_gpu_fused_ops_under_autocast_in_graphs(method, dtype, monkeypatch):
    """A training step under autocast (as with AmpOptimWrapper), the fused
    ops running: the graphed backbone's outputs and gradients equal the
    eager one's."""
    from layer_cases import ApplySpy, relative_error
    from mmdyn.ops import dcd_weights, odconv_weights
    spy = ApplySpy(monkeypatch, dcd_weights.FusedDCDWeights
                   if method == 'dcd' else odconv_weights.FusedODConvWeights)
    eager, graphed, runner = twins(method)
    eager.train()
    graphed.train()
    for _ in range(2):  # a capture, then a replay
        x = cuda_randn(2, 3, 96, 128)
        with torch.autocast('cuda', dtype=dtype):
            expected, actual = eager(x), graphed(x)
        assert all(o.dtype == dtype for o in actual)
        assert_close_all(actual, expected, rtol=1e-2, atol=1e-2)
        weights = [torch.randn_like(o) for o in expected]
        assert relative_error(grads_of(graphed, actual, weights),
                              grads_of(eager, expected, weights)) < 1e-2
    assert spy.calls > 0
    assert runner.stats['captures'] >= 1


@gpu
def test_gpu_inputs_that_outgrow_the_static_buffers():
    """Inference on one small image, then training on two larger ones: the
    static buffers grow, so the graphs go with their pool and are captured
    again (into a new pool; the old one takes no more captures)."""
    eager = build('dcd', 'cuda')
    graphed = copy.deepcopy(eager)
    runner = enable_cuda_graph(graphed)
    eager.eval()
    graphed.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64, device='cuda')
        assert_close_all(graphed(x), eager(x), rtol=1e-5, atol=1e-5)
    eager.train()
    graphed.train()
    for shape in [(2, 3, 96, 128), (2, 3, 64, 64), (2, 3, 96, 128)]:
        x = torch.randn(shape, device='cuda')
        expected, actual = eager(x), graphed(x)
        assert_close_all(actual, expected, rtol=1e-5, atol=1e-5)
        assert_close_all(grads_of(graphed, actual), grads_of(eager, expected),
                         rtol=1e-4, atol=1e-5)
    assert runner.stats == {'captures': 3, 'replays': 4}


@gpu
def test_gpu_static_memory_does_not_grow_per_shape():
    graphed = build('odconv-1x', 'cuda')
    runner = enable_cuda_graph(graphed)
    graphed.train()

    def step(size):
        x = torch.randn(2, 3, size, size, device='cuda')
        sum(o.sum() for o in graphed(x)).backward()

    step(128)
    torch.cuda.synchronize()
    reserved = torch.cuda.memory_reserved()
    for size in (96, 64, 32, 96, 128):
        step(size)
    torch.cuda.synchronize()
    # smaller shapes reuse the pool and the static buffers of the largest
    assert torch.cuda.memory_reserved() <= reserved * 1.1
    assert runner.stats['captures'] == 4
    static = sum(a.data.numel() for a in runner.arenas.values()) + sum(
        p.numel() * 4 for p in trainable(graphed))
    assert runner.memory_bytes() > static  # the pool is counted too


def _ddp_worker(rank, port, result_file):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    torch.cuda.set_device(0)  # both processes on one GPU
    trained = {}
    for graphs in (False, True):
        model = build('odconv-1x', 'cuda', norm_eval=False)
        if graphs:
            enable_cuda_graph(model)
        ddp = nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(rank)
        ddp.train()
        for _ in range(3):
            x = torch.randn(2, 3, 64, 96, generator=generator).cuda()
            optimizer.zero_grad()
            sum(o.square().mean() for o in ddp(x)).backward()
            optimizer.step()
        trained[graphs] = [p.detach().cpu() for p in model.parameters()]
        stats = get_cuda_graph(model).stats if graphs else None
    same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-5)
               for a, b in zip(trained[False], trained[True]))
    if rank == 0:
        torch.save(dict(same=same, stats=dict(stats)), result_file)
    dist.destroy_process_group()


@gpu
def test_gpu_ddp_two_processes(tmp_path):
    """DDP (gloo, two processes sharing the GPU): the graphed backbone
    trains to the same weights as the eager one, averaging gradients."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    result = tmp_path / 'result.pt'
    torch.multiprocessing.spawn(_ddp_worker, args=(port, str(result)),
                                nprocs=2)
    result = torch.load(result)
    assert result['same']
    assert result['stats'] == {'captures': 1, 'replays': 3}
