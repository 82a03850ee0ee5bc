#!/usr/bin/env bash
# Collects what tools/benchmarks/accelerator_check.sh needs on a GPU machine that has no network
# and no OpenMMLab packages (Python 3.12, torch, transformers, timm, numpy, OpenCV... but no
# mmengine / mmcv / mmpretrain), into an ignored folder that travels with the repository:
#
#   .gpu_carry/wheels/              pure-Python wheels for CPython 3.12 on x86-64 Linux:
#                                   mmengine, mmcv-lite, mmpretrain and the packages they import
#                                   that such a machine lacks (--no-deps: each is named here)
#   .gpu_carry/data/fashion-mnist/  Fashion-MNIST's four IDX .gz files (the Debian package
#                                   dataset-fashion-mnist), for the evidence run
#   .gpu_carry/MANIFEST.txt         sizes and sha256 of everything above
#
#   bash tools/benchmarks/collect_gpu_wheels.sh [CARRY_DIR]     # default .gpu_carry
#
# Run it where the package registry is reachable. The versions are those of the pinned stack
# (requirements/runtime.txt, tools/setup_env.sh), where they are tested together. mmcv-lite is
# mmcv without compiled ops (mae-mm uses none of them); where a release has no wheel on the
# registry, one is built from its sdist (pip wheel --no-deps). setuptools < 82 travels for
# mmengine's pkg_resources imports; accelerator_check.py installs it only where the machine's
# Python lacks pkg_resources. The total must stay under 64 MiB (what a device call carries).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY="${1:-.gpu_carry}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
FMNIST_SRC="${FMNIST_SRC:-/usr/share/datasets/fashion-mnist}"
PACKAGES=(
  mmengine==0.10.7 mmcv-lite==2.1.0 mmpretrain==1.2.0
  # mmengine: addict, termcolor, yapf (-> platformdirs); mmpretrain: importlib-metadata
  # (-> lazy-importer; zipp is there), mat4py, modelindex (-> model-index -> ordered-set).
  addict==2.4.0 termcolor==3.3.0 yapf==0.43.0 platformdirs==4.14.9
  importlib-metadata==10.2.0 lazy-importer==0.1.0 mat4py==0.6.0
  modelindex==0.0.2 model-index==0.1.11 ordered-set==4.1.0
  setuptools==81.0.0
)
TARGET=(--python-version 3.12 --implementation cp --abi cp312
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform any)
mkdir -p "$CARRY/wheels" "$CARRY/data/fashion-mnist"
rm -f "$CARRY"/wheels/*.whl
# A machine-wide pip constraint (some machines cap versions) must not veto these pins.
export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
for spec in "${PACKAGES[@]}"; do
  if ! "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "${TARGET[@]}" \
       -d "$CARRY/wheels" "$spec" 2>/dev/null; then
    echo "[collect] no wheel of $spec on the registry: building one from its sdist"
    "$PYTHON" -m pip wheel -q --no-deps --no-binary=:all: -w "$CARRY/wheels" "$spec"
  fi
done
for whl in "$CARRY"/wheels/*.whl; do
  case "$whl" in
    *-none-any.whl) ;;
    *) echo "[collect] $whl is not pure Python: it may not install on the GPU machine" >&2 ;;
  esac
done
if ls "$FMNIST_SRC"/*-ubyte.gz >/dev/null 2>&1; then
  cp "$FMNIST_SRC"/*-ubyte.gz "$CARRY/data/fashion-mnist/"
else
  echo "[collect] no Fashion-MNIST at $FMNIST_SRC (Debian: apt-get install dataset-fashion-mnist," \
       "or set FMNIST_SRC): the evidence run will lack its data" >&2
fi
(cd "$CARRY" && find wheels data -type f | sort | xargs sha256sum | while read -r sum path; do
   printf '%10d  %s  %s\n' "$(stat -c %s "$path")" "$sum" "$path"; done) > "$CARRY/MANIFEST.txt"
BYTES=$(du -sb "$CARRY" | cut -f1)
MIB=$(( (BYTES + 1048575) / 1048576 ))
NWHEELS=$(ls "$CARRY"/wheels/*.whl | wc -l)
NDATA=$(ls "$CARRY"/data/fashion-mnist | wc -l)
echo "[collect] $CARRY: $NWHEELS wheels, $NDATA data files, ${MIB} MiB (limit 64 MiB)"
if [ "$BYTES" -ge $((64 * 1048576)) ]; then
  echo "[collect] $CARRY is over the 64 MiB a device call carries" >&2
  exit 1
fi
