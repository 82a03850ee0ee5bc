#!/usr/bin/env bash
# One stage of the compatibility matrix: build (or reuse) a venv from
# requirements/compat/STAGE.txt and run the core test subset in it, with mae-mm from this source
# tree (PYTHONPATH; no install, so the JPEG extension built for the main venv's Python is not
# used there and the Pillow fallback is what runs).
#
#   bash tools/compat/run_stage.sh oldest|newest
#
# The venv lives outside the clone, in ${MAE_MM_COMPAT_DIR:-$HOME/.cache/mae-mm/compat}, named
# after a hash of its requirements file: it is built once (~2.5 GB of torch + CUDA libraries,
# 2-5 min) and reused while that file is unchanged.
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGE="${1:?usage: run_stage.sh oldest|newest}"
REQS="requirements/compat/$STAGE.txt"
[ -f "$REQS" ] || { echo "[compat] no $REQS: use one of $(ls requirements/compat | sed 's/.txt//' | tr '\n' ' ')" >&2; exit 2; }
PYVER="$(sed -n 's/^# python: *//p' "$REQS" | head -1)"
# python3.X on PATH if it runs (a pyenv shim of a version that is not selected does not), else
# pyenv's newest 3.X installation.
PYTHON=""
if "python$PYVER" -c '' >/dev/null 2>&1; then
  PYTHON="$(command -v "python$PYVER")"
else
  for cand in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$PYVER".* 2>/dev/null | sort -V -r); do
    if "$cand/bin/python$PYVER" -c '' >/dev/null 2>&1; then PYTHON="$cand/bin/python$PYVER"; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "[compat] $STAGE needs Python $PYVER: put python$PYVER on PATH or 'pyenv install $PYVER'" >&2; exit 2; }
ROOT="${MAE_MM_COMPAT_DIR:-$HOME/.cache/mae-mm/compat}"
HASH="$(cat "$REQS" | sha256sum | cut -c1-12)"
VENV="$ROOT/$STAGE-py$PYVER-$HASH"
LOG="$ROOT/$STAGE-py$PYVER-$HASH.log"
mkdir -p "$ROOT"
start=$SECONDS
if [ -f "$VENV/.complete" ]; then
  echo "[compat] $STAGE: reusing $VENV"
else
  echo "[compat] $STAGE: building $VENV from $REQS (log: $LOG)"
  rm -rf "$VENV"
  {
    "$PYTHON" -m venv "$VENV" &&
    "$VENV/bin/python" -m pip install -q --upgrade pip &&
    # The stage pins its own versions: a machine-wide pip constraint (some machines cap torch at
    # the release they cache on disk) must not veto them.
    PIP_CONSTRAINT=/dev/null "$VENV/bin/python" -m pip install -q -r "$REQS"
  } >"$LOG" 2>&1 || { tail -20 "$LOG" >&2; echo "[compat] $STAGE: installing $REQS failed (log: $LOG)" >&2; exit 1; }
  PYTHONPATH="$PWD" "$VENV/bin/python" -c 'import torch, mmengine, mmcv, mmpretrain, mae_mm.engine, mae_mm.models' \
    >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; echo "[compat] $STAGE: import check failed (log: $LOG)" >&2; exit 1; }
  touch "$VENV/.complete"
  # Venvs of this stage's earlier requirements are stale: free their ~5 GB.
  for old in "$ROOT/$STAGE"-py*; do
    [ "$old" = "$VENV" ] || [ "$old" = "$LOG" ] || rm -rf "$old"
  done
fi
"$VENV/bin/python" - <<'PY'
import sys, torch, numpy, mmengine, mmcv, mmpretrain
print(f'[compat] python {sys.version.split()[0]}, torch {torch.__version__}, numpy {numpy.__version__}, '
      f'mmengine {mmengine.__version__}, mmcv(-lite) {mmcv.__version__}, mmpretrain {mmpretrain.__version__}')
PY
echo "[compat] $STAGE: environment ready in $((SECONDS - start)) s"
# The core subset: model forward/backward (fp32, bf16), masking, checkpoint formats and
# conversion, pretraining with the Runner, a fine-tuning run.
PYTHONPATH="$PWD" OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -p no:cacheprovider -q \
  tests/test_compat_core.py \
  tests/test_models/test_loss_reference.py \
  tests/test_models/test_masked_vit.py \
  tests/test_models/test_layers.py \
  tests/test_models/test_reconstruction.py \
  tests/test_utils/test_checkpoint.py \
  tests/test_engine/test_runner_opt_in.py \
  tests/test_plugin_boundary.py \
  tests/test_configs/test_eval_configs.py \
  tests/test_engine/test_pretrain_runner.py::test_runner_training_lowers_the_loss \
  tests/test_engine/test_pretrain_runner.py::test_two_processes_equal_one_process
