"""Files that are not checkpoints, or not whole ones, each get a message of
their own that says what the file is, on every path that reads one; none
suggests turning weights-only loading off (PyTorch's own message for such
files does)."""
import pickle
import zipfile

import pytest
import torch
from mmengine.runner import CheckpointLoader

import mmdyn  # noqa: F401  (MMEngine's loaders read weights-only)
from mmdyn.checkpoint import CheckpointError, load_checkpoint_file


def _good(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}}, path)
    return path


def _files(tmp_path):
    """name -> (path, what its message must say)"""
    good = _good(tmp_path).read_bytes()
    files = {
        'text': (b'lr = 0.02\nmodel = dict()\n', 'is a text file'),
        'html': (b'<!DOCTYPE html><html><body>Sign in</body></html>',
                 'is an HTML page'),
        'random': (bytes(range(256)) * 4, 'neither the zip archive'),
        'empty': (b'', 'is empty (0 bytes)'),
        'truncated': (good[:len(good) // 2], 'is a truncated PyTorch '
                      'checkpoint'),
        'old pickle, truncated': (pickle.dumps({'w': 1})[:5],
                                  'truncated or corrupt'),
    }
    paths = {}
    for name, (data, message) in files.items():
        path = tmp_path / (name.replace(' ', '_').replace(',', '') + '.pth')
        path.write_bytes(data)
        paths[name] = (path, message)
    archive = tmp_path / 'archive.pth'
    with zipfile.ZipFile(archive, 'w') as zipped:
        zipped.writestr('notes/readme.txt', 'weights elsewhere')
    paths['zip without data.pkl'] = (archive, 'zip archive without a '
                                     'data.pkl')
    return paths


@pytest.mark.parametrize('reader', ['mmdyn', 'mmengine'])
def test_each_kind_of_file_says_what_it_is(tmp_path, reader):
    for name, (path, message) in _files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            if reader == 'mmdyn':
                load_checkpoint_file(str(path))
            else:  # load_from, --resume, tools/test.py
                CheckpointLoader.load_checkpoint(str(path), 'cpu')
        text = str(info.value)
        assert message in text, (name, text)
        assert str(path) in text
        assert 'weights_only' not in text and 'set to False' not in text
        assert text.rstrip().endswith(('.', '?')), text  # no cut sentence


def test_a_whole_checkpoint_still_loads(tmp_path):
    loaded = load_checkpoint_file(str(_good(tmp_path)))
    assert loaded['state_dict']['w'].shape == (64, 64)
