"""mmdyn/fileio.py: a file is written whole or left as it was."""
import os

import pytest

from mmdyn.fileio import atomic_path


def test_the_file_appears_when_the_block_completes(tmp_path):
    path = tmp_path / 'sub' / 'out.txt'
    with atomic_path(str(path)) as tmp:
        with open(tmp, 'w') as f:
            f.write('new')
        assert not path.exists()  # not before the block ends
    assert path.read_text() == 'new'
    assert os.listdir(path.parent) == ['out.txt']


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / 'out.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('stopped')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['out.txt']


def test_temporary_keeps_the_suffix_and_hides_beside_the_file(tmp_path):
    with atomic_path(str(tmp_path / 'm.onnx'), suffix='.onnx') as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        assert os.path.basename(tmp).startswith('.m.onnx.')
        assert tmp.endswith('.onnx')
        open(tmp, 'w').close()
    assert os.listdir(tmp_path) == ['m.onnx']
