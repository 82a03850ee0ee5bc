#!/usr/bin/env bash
# Distributed training on one or more nodes with torchrun (one process per GPU, or per CPU
# worker on a machine without CUDA, where tools/train.py switches to the gloo backend).
#
#   bash tools/dist_train.sh CONFIG NGPUS [train.py args...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
#
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500),
# PYTHON (default: the repository's .venv if present, else python on PATH): the interpreter
# that runs torchrun and train.py; the first line of stderr names it.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG NGPUS [train.py args...]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/torchrun.sh" train.py "$2" "$1" --launcher pytorch "${@:3}"
