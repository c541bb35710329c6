"""The output's pixel sums that the conv kernel keeps as it writes a block's
output (mmdyn/ops/pixel_sums.py), and the next layer's pool taking them:
equal to the sums of the output in float64 (< 1e-12), discarded where the
output changed in place, needs a gradient or is a view, and shown to
matter: a backbone whose kept sums are doubled no longer equals its
layers' operations."""
import pytest
import torch
from torch import nn

from layer_cases import (eval_backbone, make_layer, relative_error,
                         triton_runs_here)
from mmdyn.layers.functional import global_avg_pool
from mmdyn.ops import fused_ops
from mmdyn.ops import pixel_sums as kept_sums
from mmdyn.ops.conv_norm import conv_norm_act

pytestmark = pytest.mark.skipif(
    not triton_runs_here('cpu'),
    reason="needs Triton's CPU interpreter (triton >= 3.9)")


def _block_output(layer_name='odconv-1x-fused', geometry='3x3'):
    """A dynamic conv, eval BatchNorm and ReLU through the kernel's
    epilogue, float64, batch 3 (a large batch here)."""
    torch.manual_seed(0)
    layer, _ = make_layer(layer_name, geometry, bias=True)
    layer.eval().requires_grad_(False)
    norm = nn.BatchNorm2d(layer.out_channels).double().eval()
    x = torch.randn(3, layer.in_channels, 9, 7, dtype=torch.float64)
    with torch.no_grad(), fused_ops('always'):
        return conv_norm_act(layer, norm, x, act=nn.ReLU())


@pytest.mark.parametrize('layer_name',
                         ['odconv-1x-fused', 'dyconv', 'dcd-fused'])
@pytest.mark.parametrize('geometry', ['1x1', '3x3-stride2'])
def test_kept_sums_are_the_outputs(layer_name, geometry, large_batch):
    out = _block_output(layer_name, geometry)
    kept = kept_sums.recall(out)
    assert kept is not None and kept.dtype == torch.float64
    assert relative_error([kept], [out.sum(dim=(2, 3))]) < 1e-12
    with fused_ops('always'):
        pooled = global_avg_pool(out)
        assert torch.equal(kept_sums.pixel_sums(out), kept)
    assert relative_error([pooled], [out.mean(dim=(2, 3))]) < 1e-12


def test_a_changed_output_has_its_sums_discarded(large_batch):
    """In place: the version counter moves and the pool reads the new
    values; a view or a copy has none kept; nor does a tensor that needs a
    gradient."""
    out = _block_output()
    out.mul_(2)
    assert kept_sums.recall(out) is None
    assert torch.equal(global_avg_pool(out), out.mean(dim=(2, 3)))
    out = _block_output()
    assert kept_sums.recall(out[:, :]) is None
    assert kept_sums.recall(out.clone()) is None
    assert kept_sums.recall(out.requires_grad_()) is None


def test_no_sums_without_the_epilogue():
    """A small batch: the block's own operations run, and nothing is
    kept."""
    assert kept_sums.recall(_block_output()) is None


BACKBONES = {
    'odconv-1x resnet50': dict(type='mmdyn.ODResNet', depth=50,
                               base_channels=8, kernel_num=1),
    'odconv-4x mobilenetv2': dict(type='mmdyn.ODMobileNetV2',
                                  widen_factor=0.25, kernel_num=4),
}


def _backbone_outputs(name, double_kept=False, monkeypatch=None):
    model, x = eval_backbone(BACKBONES[name])
    recalled = []
    recall = kept_sums.recall

    def counted(t):
        found = recall(t)
        recalled.append(found is not None)
        return None if found is None else found * (2 if double_kept else 1)

    monkeypatch.setattr(kept_sums, 'recall', counted)
    with torch.no_grad():
        with fused_ops('always'):
            fused = model(x)
        with fused_ops('off'):
            plain = model(x)
    return fused, plain, sum(recalled)


@pytest.mark.slow
@pytest.mark.parametrize('name', list(BACKBONES))
@pytest.mark.parametrize('double_kept', [False, True])
def test_backbone_pools_from_kept_sums(name, double_kept, large_batch,
                                       monkeypatch):
    """The backbone's dynamic layers pool from the kept sums (most of
    them), and it equals its layers' PyTorch operations in float64; with
    the kept sums doubled it does not (the comparison sees them)."""
    fused, plain, recalled = _backbone_outputs(name, double_kept,
                                               monkeypatch)
    assert recalled > 5
    error = relative_error(list(fused), list(plain))
    # doubled: about 7e-4 (the attentions move), far above the 1e-9 bar
    assert error > 1e-5 if double_kept else error < 1e-9
