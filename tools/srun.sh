#!/usr/bin/env bash
# Shared by slurm_train.sh and slurm_test.sh: run a tools/ script as GPUS Slurm tasks, one per GPU
# (mmengine reads SLURM_PROCID/SLURM_NTASKS/SLURM_NODELIST).
#
#   bash tools/srun.sh PARTITION JOB_NAME SCRIPT [script args...]
#
# Environment: GPUS (8, total tasks), GPUS_PER_NODE (min(GPUS, 8)), CPUS_PER_TASK (5),
# SRUN_ARGS (extra srun options), MASTER_PORT (29500, read by mmengine), PYTHON (default: the
# repository's .venv if present, else python on PATH; the first line of stderr names it).
set -euo pipefail
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
TOOLS_DIR="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tools/python_interpreter.sh
source "$TOOLS_DIR/python_interpreter.sh"  # sets PY
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
exec srun -p "$1" \
  --job-name="$2" \
  --gres=gpu:"$GPUS_PER_NODE" \
  --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="${CPUS_PER_TASK:-5}" \
  --kill-on-bad-exit=1 \
  ${SRUN_ARGS:-} \
  "$PY" -u "$TOOLS_DIR/$3" "${@:4}"
