#!/usr/bin/env bash
# What tools/slurm_train.sh and tools/slurm_test.sh share: run a tool with
# srun, one task per GPU.
#   bash tools/slurm_launch.sh PARTITION JOB_NAME TOOL [TOOL arguments]
# GPUS (default 8), GPUS_PER_NODE (GPUS up to 8), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun options) and PYTHON (python) come from the
# environment.
set -x
PARTITION=$1
JOB_NAME=$2
TOOL=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$(dirname "$0")/$TOOL" "${@:4}"
