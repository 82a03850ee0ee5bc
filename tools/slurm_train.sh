#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU.
#
#   GPUS=16 bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#
# Environment: GPUS (8, total tasks), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun options), MASTER_PORT (29500, read by mmengine), PYTHON (default: the
# repository's .venv if present, else python on PATH; the first line of stderr names it).
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/srun.sh" "$1" "$2" train.py "$3" --work-dir="$4" --launcher=slurm \
  "${@:5}"
