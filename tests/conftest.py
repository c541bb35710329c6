"""``MMDYN_TEST_DEVICE=cuda python -m pytest tests/test_layers.py`` runs the
layer tests on a GPU: tensors and modules are then created there. A test
module that sets ``KEEPS_DEFAULT_DEVICE = True`` names its devices itself
and runs as it is."""
import os

import pytest
import torch

DEVICE = os.environ.get('MMDYN_TEST_DEVICE')

# Without a GPU, mmdyn's Triton kernels are tested in Triton's CPU
# interpreter; it is chosen when the kernels are first imported.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')


@pytest.fixture(autouse=True)
def _default_device(request):
    if not DEVICE or getattr(request.module, 'KEEPS_DEFAULT_DEVICE', False):
        yield
        return
    previous = torch.get_default_device()
    torch.set_default_device(DEVICE)
    # the comparisons check the formulation: no TF32 rounding on GPUs
    backends = torch.backends
    tf32 = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = tf32
    torch.set_default_device(previous)
