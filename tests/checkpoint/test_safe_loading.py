"""No checkpoint runs code unless the user trusts it: every path that reads
one (backbone init_cfg, MMEngine's load_from / --resume / tools/test.py,
downloads, the converters) refuses a crafted pickle, names the type and the
opt-in; a trusted file loads in full."""
import argparse
import os
import os.path as osp
import pickle
import sys
import warnings
from importlib import import_module

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

import mmdyn  # noqa: F401  (installs the weights-only loaders)
from mmdyn.checkpoint import (TRUSTED_CHECKPOINTS_ENV, CheckpointError,
                              load_backbone_checkpoint, trust_checkpoints)
from mmdyn.engine import add_trust_argument, parse_runner_args
from conftest import REPO


class _LeavesAMark:
    """Unpickling this creates the folder ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path, ))


@pytest.fixture(autouse=True)
def _no_trust_outlives_a_test(monkeypatch):
    # set (not deleted), so that monkeypatch restores the variable after
    # the test whatever trust_checkpoints wrote into it
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV, '')


def _backbone():
    return MODELS.build(dict(type='ODResNet', depth=18))


def _crafted(tmp_path, name='crafted.pth'):
    """A usable backbone checkpoint that also holds code; returns its path
    and the file that the code creates."""
    mark = tmp_path / f'{name}.ran'
    path = tmp_path / name
    torch.save({'state_dict': _backbone().state_dict(),
                'meta': _LeavesAMark(mark)}, path)
    return str(path), mark


def _assert_refused(error, path):
    message = str(error)
    assert 'type os.makedirs' in message
    assert 'could run code' in message
    if '://' not in path:
        assert f'--trust-checkpoint {path}' in message
        assert TRUSTED_CHECKPOINTS_ENV in message


def test_backbone_init_cfg_refuses_code(tmp_path):
    path, mark = _crafted(tmp_path)
    backbone = MODELS.build(dict(type='ODResNet', depth=18, init_cfg=dict(
        type='Pretrained', checkpoint=path)))
    with pytest.raises(CheckpointError) as info:
        backbone.init_weights()
    _assert_refused(info.value, path)
    assert not mark.exists()


def test_load_from_resume_and_test_refuse_code(tmp_path):
    """What ``load_from``, ``--resume`` and tools/test.py call."""
    path, mark = _crafted(tmp_path)
    with pytest.raises(CheckpointError) as info:
        CheckpointLoader.load_checkpoint(path, 'cpu')
    _assert_refused(info.value, path)
    assert not mark.exists()


def test_downloads_are_weights_only_with_the_training_types(
        tmp_path, monkeypatch):
    """``https://`` names (and torchvision://, open-mmlab://, which end
    there) load from the download cache weights-only: a training checkpoint
    (message hub, numpy) loads, code is refused."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    cache = tmp_path / 'hub' / 'checkpoints'  # torch.hub's download cache
    cache.mkdir(parents=True)
    loss = HistoryBuffer([np.float64(1.0)], [1])
    torch.save({'state_dict': {'w': torch.ones(1)},
                'message_hub': {'loss': loss}}, cache / 'training.pth')
    checkpoint = CheckpointLoader.load_checkpoint(
        'https://example.org/training.pth', 'cpu')
    assert checkpoint['message_hub']['loss'].mean() == 1.0
    _, mark = _crafted(cache)
    with pytest.raises(CheckpointError) as info:
        CheckpointLoader.load_checkpoint(
            'https://example.org/crafted.pth', 'cpu')
    _assert_refused(info.value, 'https://example.org/crafted.pth')
    assert 'download it' in str(info.value)
    assert not mark.exists()


@pytest.mark.parametrize('converter', ['official_to_mmdyn',
                                       'mmdet2_detector_to_mmdyn'])
def test_converters_refuse_code(converter, tmp_path):
    sys.path.insert(0, osp.join(REPO, 'tools', 'model_converters'))
    try:
        main = import_module(converter).main
    finally:
        sys.path.pop(0)
    path, mark = _crafted(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([path, str(tmp_path / 'out.pth')])
    _assert_refused(info.value.code, path)
    assert not mark.exists()
    assert not (tmp_path / 'out.pth').exists()


def test_a_trusted_file_loads_in_full(tmp_path):
    path, mark = _crafted(tmp_path)
    other, other_mark = _crafted(tmp_path, 'other.pth')
    trust_checkpoints([path])
    with pytest.warns(UserWarning, match='trusted'):
        report = load_backbone_checkpoint(_backbone(), path)
    assert report.loaded and mark.exists()
    # trust is per file
    with pytest.raises(CheckpointError):
        load_backbone_checkpoint(_backbone(), other)
    assert not other_mark.exists()


def test_trust_reaches_child_processes_through_the_environment(
        tmp_path, monkeypatch):
    path, mark = _crafted(tmp_path)
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV,
                       osp.join(osp.relpath(tmp_path), 'crafted.pth'))
    with pytest.warns(UserWarning, match='trusted'):
        CheckpointLoader.load_checkpoint(path, 'cpu')
    assert mark.exists()


def test_tools_trust_checkpoint_option(tmp_path):
    path, mark = _crafted(tmp_path)
    args = parse_runner_args(argparse.ArgumentParser(),
                             ['--trust-checkpoint', path])
    assert args.trust_checkpoint == [path]
    with pytest.warns(UserWarning, match='trusted'):
        CheckpointLoader.load_checkpoint(path, 'cpu')
    assert mark.exists()
    with pytest.raises(SystemExit):  # argparse error: only local files
        parse_runner_args(argparse.ArgumentParser(),
                          ['--trust-checkpoint', 'https://x.org/a.pth'])
    parser = argparse.ArgumentParser()
    add_trust_argument(parser)
    parser.parse_args(['--trust-checkpoint', path])
    assert parser.parse_args([]).trust_checkpoint == []


def test_only_local_files_can_be_trusted():
    with pytest.raises(ValueError, match='only local files'):
        trust_checkpoints(['torchvision://resnet50'])


def test_a_trusted_file_still_loads_weights_only_when_it_can(tmp_path):
    """Trust does not switch safety off for files that do not need it."""
    path = tmp_path / 'plain.pth'
    torch.save({'state_dict': _backbone().state_dict()}, path)
    trust_checkpoints([str(path)])
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)
        load_backbone_checkpoint(_backbone(), str(path))


def test_refusals_are_unpickling_errors_only(tmp_path):
    """A corrupt file is reported as such, not as refused code."""
    path = tmp_path / 'corrupt.pth'
    path.write_bytes(pickle.dumps({'a': 1})[:5])
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        CheckpointLoader.load_checkpoint(str(path), 'cpu')
