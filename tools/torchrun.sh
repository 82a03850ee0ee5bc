#!/usr/bin/env bash
# Shared by dist_train.sh and dist_test.sh: run a tools/ script in NPROC processes per node with
# torchrun, honouring NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500) and
# PYTHON (default: the repository's .venv if present, else python on PATH), with the repository
# root on PYTHONPATH.
#
#   bash tools/torchrun.sh SCRIPT NPROC [script args...]
set -euo pipefail
SCRIPT=$1
NPROC=$2
TOOLS_DIR="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=tools/python_interpreter.sh
source "$TOOLS_DIR/python_interpreter.sh"  # sets PY
exec "$PY" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$NPROC" \
  --master_port="${PORT:-29500}" \
  "$TOOLS_DIR/$SCRIPT" "${@:3}"
