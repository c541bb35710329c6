#!/usr/bin/env bash
# Sets up mmdyn on a fresh machine with Python >= 3.10 and no GPU: PyTorch
# (CPU), mmcv 2.1.0 built from source with its compiled ops, Triton,
# mmengine, mmdet, pycocotools and mmdyn itself (editable, with the test
# extras).
#
# Installs into the Python that runs it (python3, or $PYTHON): activate a
# virtual environment or conda env first to keep it apart. Whatever is
# already installed and fits is kept: a CUDA PyTorch, an mmcv 2.1.x with ops
# (e.g. from `mim install mmcv==2.1.0`). pip's wheel cache is left on, so a
# second run reuses the mmcv wheel built by the first (about 10 minutes on
# 2 cores) instead of compiling it again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${MMDYN_TORCH_SPEC:-torch==2.13.0}
pip_install() { "$PY" -m pip install --progress-bar off "$@"; }
step() { echo "[setup_env] $*"; }

if "$PY" -c 'import torch' 2>/dev/null; then
    step "keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    step "installing $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
fi

if "$PY" -c 'import mmcv, mmcv._ext; assert mmcv.__version__.startswith("2.1.")' 2>/dev/null; then
    step "keeping the installed mmcv $("$PY" -c 'import mmcv; print(mmcv.__version__)') (with ops)"
else
    # mmcv 2.1.0's setup.py needs setuptools < 70 and the torch it compiles
    # against (no build isolation); setup.py then asks for the setuptools
    # that torch and mmengine need at run time.
    step "building mmcv 2.1.0 with ops from source (about 10 minutes on 2 cores; reused from pip's cache next time)"
    step "pip may now report that torch needs setuptools >= 77: expected, the last step installs it"
    pip_install "setuptools<70" wheel numpy ninja
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pip_install --no-build-isolation mmcv==2.1.0
    "$PY" -c 'import mmcv, mmcv._ext' || { echo "mmcv was installed without its compiled ops" >&2; exit 1; }
fi

# Triton: on a GPU it runs mmdyn's fused ODConv kernels (CUDA PyTorch
# brings its own, kept here); without one the tests run those kernels in
# Triton's CPU interpreter, which needs triton >= 3.9 with numpy >= 2.4.
if "$PY" -c 'import triton' 2>/dev/null; then
    step "keeping the installed triton $("$PY" -c 'import triton; print(triton.__version__)')"
else
    step "installing triton (mmdyn's fused ODConv kernels; the tests run them in its CPU interpreter)"
    pip_install "triton>=3.9"
fi

step "installing mmengine, mmdet, pycocotools and mmdyn (editable)"
pip_install -e ".[tests]"
"$PY" -c 'import torch, mmcv, mmdet, mmengine, mmdyn; from mmcv.ops import RoIAlign; print("[setup_env] ready: torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "mmengine", mmengine.__version__, "mmdyn", mmdyn.__version__)'
