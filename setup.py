"""mmdyn: dynamic-convolution backbones (ODConv, DCD, DyConv, CondConv) for
MMDetection 3.x."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

#: what MIM and ``mmdyn::`` config paths find in the installed package
MIM_FILES = ['configs', 'tools', 'model-index.yml']


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmdyn', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def add_mim_extension():
    """Put the configs and tools into ``mmdyn/.mim``, as OpenMMLab packages
    do: copies for a wheel or sdist (so a non-editable install ships them),
    symbolic links for an editable install. ``mim train mmdyn CONFIG`` and
    ``_base_ = 'mmdyn::odconv/...'`` read them there."""
    if {'develop', 'editable_wheel'} & set(sys.argv):
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'install'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim = osp.join(root, 'mmdyn', '.mim')
    os.makedirs(mim, exist_ok=True)
    for name in MIM_FILES:
        source, target = osp.join(root, name), osp.join(mim, name)
        if not osp.exists(source):
            continue
        if osp.islink(target) or osp.isfile(target):
            os.remove(target)
        elif osp.isdir(target):
            shutil.rmtree(target)
        if mode == 'symlink':
            os.symlink(osp.relpath(source, mim), target)
        elif osp.isdir(source):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(
                '__pycache__', '*.pyc'))
        else:
            shutil.copyfile(source, target)


DEPLOY = ['onnx>=1.16', 'onnxscript>=0.5', 'onnxruntime>=1.20']

add_mim_extension()
setup(
    name='mmdyn',
    version=read_version(),
    description='Dynamic-convolution backbones (ODConv, DCD, DyConv, '
    'CondConv) for MMDetection 3.x',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md'),
                          encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdyn', 'mmdyn.*']),
    package_data={'mmdyn': ['.mim/**/*', '.mim/*']},
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
        # mim train / test / search (openmim)
        'mim': ['openmim>=0.3.9'],
        'tests': ['pytest', 'pytest-xdist', 'openmim>=0.3.9'] + DEPLOY,
    },
    license='Apache License 2.0',
    license_files=['LICENSE'],
    zip_safe=False,
)
