"""Every Triton kernel of mmdyn compiles for a Hopper GPU (sm_90), here on
the CPU. The CPU interpreter that runs the kernels in the other tests does
not type-check them as the GPU compiler does: a loop-carried variable that
changes shape, or two branches that give one name different types, pass
there and fail on the first GPU; nor does it see a tile that needs more
shared memory than the GPU has."""
import os
import subprocess
import sys

import pytest

from mmdyn.ops.triton_utils import triton_installed

F32, F64 = 'tl.float32', 'tl.float64'
#: kernel -> the constexprs of one launch, per accumulator type
KERNELS = {
    'dcd_kernels.squeeze_fwd': dict(BS=32, BC=128),
    'dcd_kernels.heads_fwd': dict(SAVE=True, BJ=64, BS=64, BG=32),
    'dcd_kernels.fold_fwd': dict(HAS_AFFINE=True, HAS_BIAS=True, SAVE=True,
                                 BO=16, BC=16, BT=16, BL=16),
    'dcd_kernels.fold_bwd': dict(BO=64, BC=64, BT=1, BL=32),
    'dcd_kernels.mixing_bwd': dict(HAS_AFFINE=True, HAS_BIAS=True, BO=16,
                                   BL=32, BP=8),
    'dcd_kernels.heads_bwd': dict(HAS_AFFINE=True, BJ=64, BS=64, BL=32,
                                  BQ=32, BP=8),
    'dcd_kernels.hidden_bwd': dict(BS=64, BR=32, BC=64),
    'odconv_kernels.hidden_fwd': dict(HAS_AFFINE=True, BA=32, BC=128),
    'odconv_kernels.gates_fwd': dict(NK=4, BJ=64, BA=64),
    'odconv_kernels.fold_fwd': dict(NK=4, DEPTHWISE=False, HAS_FILTER=True,
                                    HAS_SPATIAL=True, BO=16, BC=16, BT=16),
    'odconv_kernels.fold_bwd': dict(NK=4, DEPTHWISE=False, HAS_FILTER=True,
                                    HAS_SPATIAL=True, BO=16, BC=16, BT=16),
    'odconv_kernels.heads_bwd': dict(NK=4, DEPTHWISE=False, BJ=64, BA=64,
                                     BR=32),
    'odconv_kernels.hidden_bwd': dict(HAS_AFFINE=True, BA=64, BR=16, BC=64),
}
#: the per-sample conv's kernels, at the tiles and warps the op launches
CONV = dict(KW=3, TAPS=9, TF32=False, BM=128, BN=128, BK=32)
#: the forward's terms, all off: the per-sample conv's own launch
FORWARD = dict(HAS_CHAN=False, HAS_TAP=False, HAS_FILT=False, HAS_BIAS=True,
               LOW_RANK=False, LP=16, TC=4, HAS_NORM=False, HAS_RES=False,
               RELU=False, RELU_CAP=0.0, SUMS=False)
CONV_KERNELS = {
    'per_sample_conv_kernels.conv_fwd': dict(CONV, **FORWARD),
    'per_sample_conv_kernels.conv_bwd_input': CONV,
    'per_sample_conv_kernels.conv_bwd_weights': CONV,
}
#: the forward as the inference ops launch it: scaled_weight_conv.py (ODConv
#: 1x, under autocast: float32 attentions beside half-precision activations
#: and weights) and dcd_conv.py (the latent residual, in float32)
SCALED = dict(CONV, **dict(FORWARD, HAS_CHAN=True, HAS_TAP=True,
                           HAS_FILT=True, BK=64))
#: and with the block's norm, residual and ReLU after it, keeping the
#: output's pixel sums (conv_norm.py)
EPILOGUE = dict(SCALED, HAS_NORM=True, HAS_RES=True, RELU=True,
                RELU_CAP=6.0, SUMS=True)
LOW_RANK = dict(CONV, **dict(FORWARD, HAS_FILT=True, LOW_RANK=True, LP=64))
ATTENTIONS = ('chan', 'tap', 'filt', 'bias')
#: the depthwise kernel as conv_norm.py launches it (depthwise_conv.py:
#: per-sample weights, or one weight scaled by ODConv's attentions)
DEPTHWISE = dict(KW=3, TAPS=9, HAS_BIAS=True, HAS_NORM=True, HAS_RES=True,
                 RELU=True, RELU_CAP=6.0, SUMS=True)

SCRIPT = '''
import importlib, inspect, sys
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
SHARED_MEMORY = 232448  # per block on an H100 (227 KiB)
FLOATS = {'eps', 'eps1', 'eps2', 'temperature'}
failed = []
for name, consts, acc, pointer, options in eval(sys.argv[1]):
    module, kernel = name.split('.')
    fn = getattr(importlib.import_module('mmdyn.ops.' + module), kernel)
    consts = dict(consts, ACC=eval(acc))
    params = list(inspect.signature(fn.fn).parameters)
    signature = {}
    for index, param in enumerate(params):
        if param in consts:
            signature[param] = 'constexpr'
        elif param in FLOATS:
            signature[param] = 'fp32'
        elif param.isupper() or param.startswith('stride_') or param in (
                'hw', 'n_blocks', 'n_row_tiles', 'n_col_tiles'):
            signature[param] = 'i32'
        elif isinstance(pointer, dict):  # the activations' type, or
            signature[param] = pointer.get(param, pointer['*'])
        else:
            signature[param] = pointer
    # as at a launch with freshly allocated tensors and channel counts of
    # a multiple of 16: the loads are then vectorized and pipelined, and
    # take the shared memory they take on the GPU
    aligned = {(index, ): [['tt.divisibility', 16]]
               for index, param in enumerate(params)
               if param not in consts and (
                   signature[param].startswith('*') or
                   param.startswith('stride_') or param in ('C', 'CO'))}
    source = ASTSource(fn=fn, signature=signature, constexprs={
        (params.index(k), ): v for k, v in consts.items()}, attrs=aligned)
    try:
        compiled = triton.compile(source, target=GPUTarget('cuda', 90, 32),
                                  options=options)
        if compiled.metadata.shared > SHARED_MEMORY:
            failed.append(f'{name} ({acc}, {pointer}): needs '
                          f'{compiled.metadata.shared} bytes of shared memory')
    except Exception as error:
        failed.append(f'{name} ({acc}, {pointer}): {error}')
print('\\n\\n'.join(failed))
sys.exit(1 if failed else 0)
'''


@pytest.mark.slow
@pytest.mark.skipif(not triton_installed(), reason="needs Triton")
def test_every_kernel_compiles_for_sm90():
    launches = [(name, consts, acc, '*fp64' if acc == F64 else '*fp32', {})
                for name, consts in KERNELS.items() for acc in (F32, F64)]
    # the conv kernels as the op launches them on a GPU: float32 with and
    # without TF32, float16 and bfloat16 (autocast), 8 warps, 3 stages
    options = dict(num_warps=8, num_stages=3)
    for name, consts in CONV_KERNELS.items():
        launches += [(name, dict(consts, TF32=True), F32, '*fp32', options),
                     (name, consts, F32, '*fp32', options)]
        launches += [(name, dict(consts, BK=64), F32, pointer, options)
                     for pointer in ('*fp16', '*bf16')]
    for pointer in ('*fp16', '*bf16'):
        pointers = dict({k: '*fp32' for k in ATTENTIONS}, **{'*': pointer})
        launches += [('per_sample_conv_kernels.conv_fwd', consts, F32,
                      dict(pointers, norm_s='*fp32', norm_h='*fp32',
                           sums='*fp32'), options)
                     for consts in (SCALED, EPILOGUE)]
    # the depthwise kernel, tiles along the channels (channels-last) and
    # along the pixels, with the block's operations
    for pointer in ('*fp32', '*fp16', '*bf16'):
        pointers = {'*': pointer, 'norm_s': '*fp32', 'norm_h': '*fp32',
                    'sums': '*fp32'}
        launches += [('depthwise_conv_kernels.depthwise_fwd', dict(
            DEPTHWISE, BP=bp, BC=bc, HAS_CHAN=scaled, HAS_TAP=scaled), F32,
            pointers, dict(num_warps=4))
            for bp, bc in ((64, 64), (128, 16)) for scaled in (True, False)]
    launches += [('per_sample_conv_kernels.conv_fwd', dict(LOW_RANK,
                                                           TF32=tf32), F32,
                  '*fp32', options) for tf32 in (True, False)]
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env.setdefault('TRITON_DEFAULT_FP_FUSION', '1')
    result = subprocess.run([sys.executable, '-c', SCRIPT, repr(launches)],
                            env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
