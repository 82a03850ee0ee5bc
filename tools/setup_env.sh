#!/usr/bin/env bash
# Create (or bring up to date) the project environment in <repo>/.venv.
#
#   bash tools/setup_env.sh            # idempotent: seconds when everything is already there
#   PYTHON=/path/to/python3.11 bash tools/setup_env.sh
#
# Installs the pinned stack (requirements/env.txt), mmcv 2.1.0 with compiled ops, the test
# requirements and mae-mm itself (editable). mmcv comes from a wheel when pip is offered one
# (e.g. PIP_FIND_LINKS=../shared/wheelhouse); otherwise it is built from the sdist with the two
# fixes current torch needs (C++20, setuptools<82), and the built wheel is cached in .cache/wheels.
#
# Each step logs to .venv-setup.log; a failing step prints one line naming the step and the fix,
# and the environment is not marked complete (the next run redoes the missing steps).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LOG="$ROOT/.venv-setup.log"
STAMP="$VENV/.mae-mm-setup-complete"
WHEEL_CACHE="$ROOT/.cache/wheels"
MMCV_VERSION="2.1.0"
PYTHON="${PYTHON:-python3.11}"

say() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; rm -f "$STAMP"; exit 1; }

# Run one named step, output to the log; on failure explain in one line what to do.
step() {
  local name="$1"; shift
  say "$name"
  printf '\n===== %s: %s\n' "$name" "$*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    local hint="see $LOG for the full output"
    local step_output
    step_output="$(awk '/^===== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$LOG")"
    if grep -qiE 'NewConnectionError|Temporary failure in name resolution|Network is unreachable|Connection refused|Max retries exceeded|No matching distribution found|Could not find a version' <<<"$step_output"; then
      hint="the package registry could not be reached or does not serve a pinned version; check network/proxy and PIP_INDEX_URL, then re-run (details: $LOG)"
    elif grep -qiE 'No space left on device' <<<"$step_output"; then
      hint="the disk is full; free space and re-run (details: $LOG)"
    elif grep -q "No module named 'pkg_resources'" <<<"$step_output"; then
      hint="setuptools>=82 has no pkg_resources, which mmcv's setup.py needs: check requirements/build.txt (details: $LOG)"
    fi
    die "step '$name' failed: $hint"
  fi
}

# A fingerprint of everything that decides the environment's contents.
fingerprint() {
  cat "$ROOT/requirements/"*.txt "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" \
    "$ROOT/mae_mm/datasets/transforms/_crop_decode.c" | sha256sum | cut -d' ' -f1
}

# -- 0. preconditions ---------------------------------------------------------------------------
: >"$LOG"
command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' on PATH: install CPython 3.11 or set PYTHON=/path/to/python3.11"
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
  || die "'$PYTHON' does not run: set PYTHON=/path/to/python3.11"
[ "$pyver" = "3.11" ] || die "'$PYTHON' is Python $pyver; mae-mm's pinned stack needs 3.11: set PYTHON=/path/to/python3.11"

# -- 1. fast path -------------------------------------------------------------------------------
debian_ok() {
  for pkg in $(grep -v '^#' "$ROOT/requirements/debian.txt"); do dpkg -s "$pkg" >/dev/null 2>&1 || return 1; done
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] && debian_ok \
   && "$VENV/bin/python" -c 'import mmcv.ops, mmdet, mmseg, mmpretrain, mae_mm' >/dev/null 2>&1; then
  say "environment is complete and up to date: $VENV"
  exit 0
fi
rm -f "$STAMP"

# -- 2. the venv (recreated when it is broken) --------------------------------------------------
if [ -d "$VENV" ] && ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' >/dev/null 2>&1; then
  say "existing .venv is broken or not Python 3.11: recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  step "create venv at $VENV" "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# -- 3. packages ------------------------------------------------------------------------------
# One resolver run for both files, so torch's setuptools>=77 and mmcv's <82 meet.
step "install torch, mmengine, mmpretrain, mmdet, mmseg and build tools (requirements/env.txt, build.txt)" \
  "${PIP[@]}" install -r "$ROOT/requirements/env.txt" -r "$ROOT/requirements/build.txt"

install_mmcv() {
  if "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
    say "mmcv $MMCV_VERSION with ops already installed"
    return 0
  fi
  mkdir -p "$WHEEL_CACHE"
  # A wheel offered by find-links (or built earlier and cached) is used as is.
  if "${PIP[@]}" download --no-deps --only-binary :all: --find-links "$WHEEL_CACHE" \
       -d "$WHEEL_CACHE" "mmcv==$MMCV_VERSION" >>"$LOG" 2>&1; then
    step "install mmcv $MMCV_VERSION from a prebuilt wheel" \
      "${PIP[@]}" install --no-deps --no-index --find-links "$WHEEL_CACHE" "mmcv==$MMCV_VERSION"
    return 0
  fi
  say "no mmcv $MMCV_VERSION wheel offered: building it from source (about 15 minutes on 2 cores)"
  local build_dir
  build_dir="$(mktemp -d)"
  step "download the mmcv $MMCV_VERSION sdist" \
    "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$build_dir" "mmcv==$MMCV_VERSION"
  step "unpack the mmcv sdist" tar -xzf "$build_dir/mmcv-$MMCV_VERSION.tar.gz" -C "$build_dir"
  # torch>=2.10 headers refuse anything below C++20.
  step "patch mmcv setup.py for C++20" \
    sed -i -e "s/'-std=c++14'/'-std=c++20'/g" -e "s/'-std=c++17'/'-std=c++20'/g" "$build_dir/mmcv-$MMCV_VERSION/setup.py"
  step "compile mmcv $MMCV_VERSION ops (log: $LOG)" \
    env MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel --no-build-isolation --no-deps \
      -w "$WHEEL_CACHE" "$build_dir/mmcv-$MMCV_VERSION"
  step "install the built mmcv wheel" \
    "${PIP[@]}" install --no-deps --no-index --find-links "$WHEEL_CACHE" "mmcv==$MMCV_VERSION"
  rm -rf "$build_dir"
}
install_mmcv
step "install mmcv's runtime requirements" "${PIP[@]}" install addict packaging pyyaml yapf opencv-python
step "install test requirements" "${PIP[@]}" install -r "$ROOT/requirements/tests.txt" -r "$ROOT/requirements/optional.txt"
# -- 4. Debian packages (real images for tests, libjpeg headers for the extension), mae-mm --
install_debian_data() {
  local missing=()
  for pkg in $(grep -v '^#' "$ROOT/requirements/debian.txt"); do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "Debian packages missing (${missing[*]}): run 'sudo apt-get update && sudo apt-get install -y ${missing[*]}', then re-run"
  fi
  step "apt-get update" apt-get update
  step "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}
install_debian_data

step "install mae-mm (editable)" "${PIP[@]}" install --no-build-isolation --no-deps -e "$ROOT"

# -- 5. verify, then mark complete ------------------------------------------------------------
step "check that the JPEG region decoder was built (needs libjpeg62-turbo-dev)" \
  "$VENV/bin/python" -c 'from mae_mm.datasets.transforms import crop_decode; assert crop_decode.available()'
step "check that the stack imports (mmcv.ops, mmdet, mmseg, mmpretrain, mae_mm)" \
  "$VENV/bin/python" -c 'import mmcv.ops, mmdet.models, mmseg.models, mmpretrain.models, mae_mm; print(mae_mm.__version__)'
fingerprint >"$STAMP"
say "done: activate with 'source .venv/bin/activate'"
