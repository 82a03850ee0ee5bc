#!/usr/bin/env bash
# Sourced by torchrun.sh, srun.sh and benchmarks/accelerator_check.sh (with TOOLS_DIR set): picks
# the interpreter, $PYTHON if set, else the repository's .venv if present, else python (or
# python3) on PATH, names it on the first line of stderr, and puts the repository root on
# PYTHONPATH. Sets PY and REPO_DIR.
REPO_DIR="$(dirname "$TOOLS_DIR")"
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"; PY_FROM='$PYTHON'
elif [ -x "$REPO_DIR/.venv/bin/python" ]; then
  PY="$REPO_DIR/.venv/bin/python"; PY_FROM="the repository's .venv"
elif command -v python >/dev/null 2>&1; then
  PY=python; PY_FROM="python on PATH: $(command -v python)"
else  # images that ship only python3 (the GPU machine of tools/benchmarks/ACCELERATOR_CHECK.md)
  PY=python3; PY_FROM="python3 on PATH: $(command -v python3 || echo 'not found')"
fi
echo "[$(basename "$0")] interpreter: $PY ($PY_FROM)" >&2
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
