"""tools/setup_env.sh on bad input: one line, non-zero exit, never marked complete."""
import os
import shutil
import subprocess

import pytest

from .conftest import REPO_ROOT


@pytest.fixture
def repo_copy(tmp_path):
    """The files setup_env.sh reads, in a scratch repository."""
    root = tmp_path / 'repo'
    for name in ('tools', 'requirements'):
        shutil.copytree(os.path.join(REPO_ROOT, name), root / name,
                        ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(os.path.join(REPO_ROOT, 'setup.py'), root / 'setup.py')
    return root


def _run(root, **env):
    full_env = dict(os.environ, **env)
    full_env.pop('VIRTUAL_ENV', None)
    return subprocess.run(['bash', str(root / 'tools' / 'setup_env.sh')], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=300)


def _error_lines(proc):
    return [line for line in proc.stderr.splitlines() if 'ERROR' in line]


def test_wrong_python_version(repo_copy, tmp_path):
    fake = tmp_path / 'python3.12'
    fake.write_text('#!/bin/sh\necho 3.12\n')
    fake.chmod(0o755)
    proc = _run(repo_copy, PYTHON=str(fake))
    assert proc.returncode == 1
    [line] = _error_lines(proc)
    assert 'is Python 3.12' in line and 'set PYTHON=/path/to/python3.11' in line
    assert not (repo_copy / '.venv').exists()


def test_missing_python(repo_copy):
    proc = _run(repo_copy, PYTHON='python3.11-does-not-exist')
    assert proc.returncode == 1
    [line] = _error_lines(proc)
    assert "no 'python3.11-does-not-exist' on PATH" in line


def test_broken_venv_is_recreated_and_no_registry_fails_cleanly(repo_copy):
    venv_bin = repo_copy / '.venv' / 'bin'
    venv_bin.mkdir(parents=True)
    (venv_bin / 'python').symlink_to('/nonexistent/python')  # a broken venv
    proc = _run(repo_copy, PIP_INDEX_URL='http://127.0.0.1:9/simple', PIP_EXTRA_INDEX_URL='',
                PIP_FIND_LINKS='', PIP_CONFIG_FILE=os.devnull, PIP_RETRIES='0',
                PIP_DEFAULT_TIMEOUT='2')
    assert proc.returncode == 1
    assert 'existing .venv is broken' in proc.stdout
    [line] = _error_lines(proc)
    assert 'could not be reached' in line and 're-run' in line
    assert not (repo_copy / '.venv' / '.mae-mm-setup-complete').exists()
