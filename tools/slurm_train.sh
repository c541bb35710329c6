#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU, as MMDetection's
# slurm_train.sh:
#   GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR \
#       [train.py options]
# GPUS (default 8), GPUS_PER_NODE (GPUS up to 8), CPUS_PER_TASK (5) and
# SRUN_ARGS (extra srun options) come from the environment.
exec bash "$(dirname "$0")/slurm_launch.sh" "$1" "$2" train.py "$3" \
    --work-dir="$4" --launcher=slurm "${@:5}"
