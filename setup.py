"""mmdyn: dynamic-convolution backbones (ODConv, DCD, DyConv, CondConv) for
MMDetection 3.x."""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmdyn', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


DEPLOY = ['onnx>=1.16', 'onnxscript>=0.5', 'onnxruntime>=1.20']

setup(
    name='mmdyn',
    version=read_version(),
    description='Dynamic-convolution backbones (ODConv, DCD, DyConv, '
    'CondConv) for MMDetection 3.x',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md'),
                          encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdyn', 'mmdyn.*']),
    python_requires='>=3.10',  # torch 2.13's own requirement
    install_requires=[
        'torch>=2.6',
        'numpy',
        'mmengine>=0.10.0,<0.11.0',
        # mmcv must come with its compiled ops (mmcv.ops); there is no wheel
        # on PyPI, tools/setup_env.sh builds it (README: Installation).
        'mmcv>=2.1.0,<2.2.0',
        'mmdet>=3.3.0,<3.4.0',
        'pycocotools',
        # mmengine resolves 'mmdet::' base configs with pkg_resources, which
        # setuptools 81 removed; torch 2.6+ needs setuptools >= 77
        'setuptools>=77,<81',
    ],
    extras_require={
        # mmdyn.deploy's ONNX export and its check in ONNX Runtime
        'deploy': DEPLOY,
        'tests': ['pytest'] + DEPLOY,
    },
    license='Apache License 2.0',
    license_files=['LICENSE'],
    zip_safe=False,
)
