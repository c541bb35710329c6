#!/usr/bin/env bash
# Testing on a Slurm cluster, one task per GPU, as MMDetection's
# slurm_test.sh:
#   GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT \
#       [test.py options]
# GPUS (default 8), GPUS_PER_NODE (GPUS up to 8), CPUS_PER_TASK (5) and
# SRUN_ARGS (extra srun options) come from the environment.
exec bash "$(dirname "$0")/slurm_launch.sh" "$1" "$2" test.py "$3" "$4" \
    --launcher=slurm "${@:5}"
