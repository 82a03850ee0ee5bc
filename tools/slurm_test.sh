#!/usr/bin/env bash
# Testing on a Slurm cluster, one task per GPU.
#
#   GPUS=8 bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
#
# Environment: as tools/slurm_train.sh.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/srun.sh" "$1" "$2" test.py "$3" "$4" --launcher=slurm "${@:5}"
