"""Deploying mmdyn models: BatchNorms folded into the dynamic layers
(:func:`fuse_conv_bn`), ONNX export and its check in ONNX Runtime
(:mod:`mmdyn.deploy.onnx`; needs ``pip install "mmdyn[deploy]"``). See
``docs/deployment.md``."""
from .fuse import fold_norm_into_dynamic_conv, fuse_conv_bn
from .onnx import compare_with_onnxruntime, export_onnx

__all__ = [
    'fuse_conv_bn', 'fold_norm_into_dynamic_conv', 'export_onnx',
    'compare_with_onnxruntime'
]
