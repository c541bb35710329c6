"""Checkpoints are written whole or not at all: a save that fails (a full
disk) leaves no partial file, names the file and the space left, and a
resumed run then picks the last complete checkpoint."""
import errno
import os

import pytest
import torch

import mmdyn  # noqa: F401  (the Runner's saves go through mmdyn's)
from mmdyn.checkpoint import save_checkpoint
from demo import FASTER, QUICK


def _disk_full_after(monkeypatch, allowed):
    """torch.save writes part of the file, then fails as a full disk does,
    from the ``allowed + 1``-th save on."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) <= allowed:
            return real_save(obj, f, *args, **kwargs)
        with open(f, 'wb') as out:
            out.write(b'PK\x03\x04 half a checkpoint')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', save)


def test_a_failed_save_leaves_nothing_and_says_where(tmp_path, monkeypatch):
    target = tmp_path / 'iter_4.pth'
    _disk_full_after(monkeypatch, allowed=0)
    with pytest.raises(OSError) as info:
        save_checkpoint({'w': torch.zeros(3)}, str(target))
    message = str(info.value)
    assert str(target) in message and 'MiB are free' in message
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_a_save_replaces_a_file_only_when_complete(tmp_path, monkeypatch):
    target = tmp_path / 'model.pth'
    save_checkpoint({'w': torch.ones(3)}, str(target))
    _disk_full_after(monkeypatch, allowed=0)
    with pytest.raises(OSError):
        save_checkpoint({'w': torch.zeros(3)}, str(target))
    monkeypatch.undo()
    assert torch.equal(torch.load(target)['w'], torch.ones(3))
    assert os.listdir(tmp_path) == ['model.pth']


@pytest.mark.slow
def test_training_on_a_full_disk_then_resume(tmp_path, monkeypatch):
    """Through MMEngine's CheckpointHook: the save at iteration 4 fails,
    no iter_4.pth is left, last_checkpoint names iter_2.pth, and --resume
    continues from it."""
    import importlib.util
    from conftest import REPO
    spec = importlib.util.spec_from_file_location(
        'train_tool', os.path.join(REPO, 'tools', 'train.py'))
    train_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_tool)
    work = tmp_path / 'work'
    monkeypatch.chdir(tmp_path)
    argv = [FASTER, '--work-dir', str(work), '--cfg-options', *QUICK]
    _disk_full_after(monkeypatch, allowed=1)
    with pytest.raises(OSError) as info:
        train_tool.main(argv)
    assert 'iter_4.pth' in str(info.value)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert sorted(p for p in os.listdir(work) if 'iter_' in p) == [
        'iter_2.pth']
    assert (work / 'last_checkpoint').read_text().endswith('iter_2.pth')
    cfg = train_tool.build_train_config(
        train_tool.parse_args([*argv[:3], '--resume', '--cfg-options',
                               *QUICK]))
    assert cfg.resume is True
    runner = train_tool.build_runner(cfg)
    runner.train()
    assert runner.iter == 4 and (work / 'iter_4.pth').is_file()
