#!/usr/bin/env bash
# Sourced by torchrun.sh and srun.sh (with TOOLS_DIR set): picks the interpreter, $PYTHON if set,
# else the repository's .venv if present, else python on PATH, names it on the first line of
# stderr, and puts the repository root on PYTHONPATH. Sets PY.
REPO_DIR="$(dirname "$TOOLS_DIR")"
if [ -n "${PYTHON:-}" ]; then
  PY="$PYTHON"; PY_FROM='$PYTHON'
elif [ -x "$REPO_DIR/.venv/bin/python" ]; then
  PY="$REPO_DIR/.venv/bin/python"; PY_FROM="the repository's .venv"
else
  PY=python; PY_FROM="python on PATH: $(command -v python || echo 'not found')"
fi
echo "[$(basename "$0")] interpreter: $PY ($PY_FROM)" >&2
export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}"
