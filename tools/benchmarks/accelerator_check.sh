#!/usr/bin/env bash
# One-command accelerator check (issue 18; tools/benchmarks/ACCELERATOR_CHECK.md):
#
#   bash tools/benchmarks/accelerator_check.sh [--dry-run] [--out DIR] [more: --help]
#
# On a CUDA machine (about 10 minutes): the CUDA tests, benchmark.py side by side with
# mmpretrain's MAE (ViT-B/16 and ViT-L/16, batch 64 and 128, bf16, eager and compiled), a
# 300-iteration ViT-B/16 pretraining run with the real Runner and data loaders, and the GPU
# evidence run; DIR/accelerator_check.json and DIR/accelerator_check.md, rewritten after every
# step. With --dry-run: the same on CPU at tiny sizes (CI).
#
# Python: $PYTHON if set, else this checkout's .venv (tools/setup_env.sh), else python (python3)
# on PATH (tools/python_interpreter.sh). Where that Python lacks mmengine / mmcv / mmpretrain,
# the wheels in .gpu_carry/wheels (collect_gpu_wheels.sh) are installed into a private folder
# first.
set -euo pipefail
TOOLS_DIR="$(cd "$(dirname "$0")/.." && pwd)"
source "$TOOLS_DIR/python_interpreter.sh"
cd "$REPO_DIR"
exec "$PY" tools/benchmarks/accelerator_check.py "$@"
