"""ONNX export of mmdyn models, and their check in ONNX Runtime.

The export is PyTorch's own (``torch.onnx.export(..., dynamo=True)``, the
exporter built on ``torch.export``), with a dynamic batch and dynamic
height and width. While it runs, the dynamic layers compute with operations
that keep those dimensions free (:func:`mmdyn.layers.functional.exporting`):
per-sample weights are applied as a batched matrix product over unfolded
patches instead of a convolution with the batch folded into its groups, and
DCD's 2x2 pooling as the means of its bins. Neither Triton kernels nor CUDA
graphs take part (the dispatch and the graph runtime step aside while a
model is traced). See ``docs/deployment.md``.
"""
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..fileio import atomic_path

#: ONNX opset of the exported files.
OPSET = 18


def _requires(package: str):
    try:
        return __import__(package)
    except ImportError as error:
        raise ImportError(
            f'mmdyn.deploy: {package} is not installed: pip install '
            '"mmdyn[deploy]" (onnx, onnxscript, onnxruntime)') from error


class _Outputs(nn.Module):
    """``model(x)`` as a flat tuple of tensors (mmdet backbones and necks
    return tuples or lists)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        out = self.model(x)
        return (out, ) if isinstance(out, Tensor) else tuple(out)


def export_onnx(model: nn.Module,
                example: Tensor,
                path: str,
                dynamic_batch: bool = True,
                dynamic_size: bool = True,
                overwrite: bool = False) -> str:
    """Export ``model`` (a module called as ``model(x)``, x one (N, C, H, W)
    tensor; in eval mode, e.g. after :func:`mmdyn.deploy.fuse_conv_bn`) to
    the ONNX file ``path`` and check it with ``onnx.checker``.

    Args:
        example: an input to trace with; its batch should be 2 or more and
            its sides at least 32 when they are dynamic (the exporter
            specialises dimensions of size 1).
        dynamic_batch, dynamic_size: keep the batch / the height and width
            free in the exported graph.
        overwrite: replace an existing ``path``; by default an existing
            file is an error, so nothing is overwritten by accident.

    Returns:
        str: ``path``. The input is named ``input``, the outputs ``out0``,
        ``out1``, ...
    """
    onnx = _requires('onnx')
    _requires('onnxscript')
    if osp.exists(path) and not overwrite:
        raise FileExistsError(
            f'export_onnx: {path} exists; name a new file, or pass '
            'overwrite=True (--overwrite) to replace it')
    if model.training:
        raise ValueError(
            'export_onnx: the model is in training mode; call model.eval() '
            '(BatchNorms export with their running statistics)')
    dims = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim('batch', min=1, max=4096)
    if dynamic_size:
        dims[2] = torch.export.Dim('height', min=8, max=16384)
        dims[3] = torch.export.Dim('width', min=8, max=16384)
    wrapped = _Outputs(model).eval()
    with torch.no_grad():
        num_outputs = len(wrapped(example))
    with atomic_path(path, suffix='.onnx') as tmp, torch.no_grad():
        torch.onnx.export(
            wrapped, (example, ), tmp, dynamo=True,
            opset_version=OPSET, input_names=['input'],
            output_names=[f'out{i}' for i in range(num_outputs)],
            dynamic_shapes={'x': dims} if dims else None,
            external_data=False, verbose=False)
        onnx.checker.check_model(tmp)
    return path


def onnxruntime_session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for ``path``."""
    ort = _requires('onnxruntime')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options,
                                providers=['CPUExecutionProvider'])


def run_onnxruntime(session, x: Tensor) -> List[Tensor]:
    """The outputs of an ONNX Runtime session for input ``x``."""
    outputs = session.run(None, {'input': x.detach().cpu().numpy()})
    return [torch.from_numpy(o) for o in outputs]


def compare_with_onnxruntime(
        model: nn.Module, path: Union[str, object],
        inputs: Sequence[Tensor]) -> float:
    """The largest relative difference (max abs difference over max abs
    value, per output) between ``model`` and the ONNX file (or session)
    ``path`` over ``inputs``."""
    session = onnxruntime_session(path) if isinstance(path, str) else path
    wrapped = _Outputs(model).eval()
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = [t.float().cpu() for t in wrapped(x)]
        got = run_onnxruntime(session, x)
        if len(got) != len(expected):
            raise AssertionError(f'ONNX Runtime gave {len(got)} outputs, '
                                 f'PyTorch {len(expected)}')
        for g, e in zip(got, expected):
            if g.shape != e.shape:
                raise AssertionError(
                    f'ONNX Runtime output of shape {tuple(g.shape)}, '
                    f'PyTorch {tuple(e.shape)} (input {tuple(x.shape)})')
            scale = e.abs().max().clamp(min=1e-12)
            worst = max(worst, ((g - e).abs().max() / scale).item())
    return worst
