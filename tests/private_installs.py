"""Packages some tests need that the project's environment must not hold, installed once into
private folders under ``.cache/test-installs/`` (``pip install --target``) and reused.

transformers is the case: with it importable, ``import mmpretrain.models`` breaks (mmpretrain
1.2's BLIP module), which is exactly what ``tests/test_compat`` reproduces. Users who have it
installed run it from their environment's path; the tests add a private folder to a child
process's ``sys.path`` *after* the venv's site-packages, because a ``--target`` install also
holds its own numpy, packaging... which must not shadow the venv's (torch and mmcv were built
against those).

A failed install fails the test (CI reaches the package registry); it is never skipped.
"""
import fcntl
import os
import os.path as osp
import shutil
import subprocess
import sys

from .conftest import REPO_ROOT

CACHE = osp.join(REPO_ROOT, '.cache', 'test-installs')
TRANSFORMERS_RELEASES = {
    'transformers-5': 'transformers>=5,<6',
    'transformers-4.57': 'transformers==4.57.*',
}
_MARKER = '.mae_mm_installed'  # written last: the folder holds a complete install of the spec


def install_private(name: str, spec: str) -> str:
    """The folder ``.cache/test-installs/<name>`` holding ``spec`` (installed there unless it
    already is; a lock keeps concurrent test processes from installing twice)."""
    target = osp.join(CACHE, name)
    marker = osp.join(target, _MARKER)

    def installed() -> bool:
        return osp.isfile(marker) and open(marker).read().strip() == spec

    if installed():
        return target
    os.makedirs(CACHE, exist_ok=True)
    with open(osp.join(CACHE, f'.{name}.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed():
            return target
        shutil.rmtree(target, ignore_errors=True)
        env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
        proc = subprocess.run(
            [sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
             '--no-input', '--no-compile', '--target', target, spec],
            env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (f'cannot install {spec} into {target} (is the package '
                                      f'registry reachable?): {(proc.stdout + proc.stderr)[-2000:]}')
        with open(marker, 'w') as f:
            f.write(spec + '\n')
    return target
