"""What every test module shares: the markers, the Triton interpreter on a
CPU, the helpers' folder on ``sys.path``, TF32 off, and the
``large_batch`` fixture.

Markers (registered in setup.cfg):

- ``gpu``: needs a CUDA GPU; skipped without one. ``pytest -m gpu`` runs
  them all (on the GPU machine).
- ``slow``: takes more than a few seconds on a 2-core CPU;
  ``pytest -m "not slow"`` is the quick development subset.
"""
import os
import os.path as osp
import sys

import pytest
import torch

# Without a GPU, mmdyn's fused Triton kernels are tested in Triton's CPU
# interpreter; it is chosen when the kernels are first imported.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

# Under pytest-xdist (-n), each worker process gets its share of the cores,
# so that the workers' PyTorch threads do not outnumber them.
if os.environ.get('PYTEST_XDIST_WORKER_COUNT'):
    torch.set_num_threads(max(
        1, (os.cpu_count() or 1) //
        int(os.environ['PYTEST_XDIST_WORKER_COUNT'])))

# reference.py, layer_cases.py and the other helpers
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), 'helpers'))

#: the repository's root
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: parametrize a test over the CPU and, marked ``gpu``, a CUDA GPU
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (pytest -m gpu on one)')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_tf32():
    """The comparisons check the formulation: no TF32 rounding in float32
    convs and products on GPUs (with it, they differ from float32 by about
    1e-3)."""
    backends = torch.backends
    saved = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
    backends.cudnn.allow_tf32 = False
    backends.cuda.matmul.allow_tf32 = False
    yield
    backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def large_batch(monkeypatch):
    """Batches of 2 and more count as large (above the fold limit of
    mmdyn.ops.dispatch): the large-batch paths apply to them."""
    from mmdyn.ops import dispatch
    monkeypatch.setattr(dispatch, 'MAX_FOLD_BATCH', 1)
