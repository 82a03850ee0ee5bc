"""A missing JPEG region decoder is not silent: one warning per process at run time, and a
warning block from setup.py's OptionalBuildExt when the build fails; both name the package."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mae_mm.datasets.transforms import FastRandomResizedCrop, crop_decode
from ..conftest import REPO_ROOT

PHRASE = 'runs without its compiled JPEG region decoder'
PACKAGES = ('libjpeg62-turbo-dev', 'libjpeg-turbo')


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', **extra)
    return env


_RUNTIME_SCRIPT = r'''
import json, sys
import numpy as np
from mae_mm.datasets.transforms import FastRandomResizedCrop, crop_decode

paths = sys.argv[1:]
outputs = []
crops = [FastRandomResizedCrop(scale=32, crop_ratio_range=(0.2, 1.0), interpolation='bicubic')
         for _ in range(3)]
crops.append(FastRandomResizedCrop(scale=24, interpolation='bicubic', region_decode=False))
for seed, path in enumerate(paths):
    for crop in crops:
        np.random.seed(seed)
        outputs.append(crop(dict(img_path=path))['img'].shape)
print(json.dumps(dict(available=crop_decode.available(), again=crop_decode.warn_if_unavailable(),
                      shapes=sorted(set(map(tuple, outputs))), calls=len(outputs))))
'''


def test_missing_extension_warns_once_per_process_naming_the_package(photo_folder):
    """MAE_MM_DISABLE_CROP_DECODE=1 makes the extension unavailable in a fresh process: four
    transforms built, 32 crops taken, one warning, which says what to install and what runs."""
    paths = sorted(osp.join(photo_folder, f) for f in os.listdir(photo_folder))[:8]
    proc = subprocess.run([sys.executable, '-c', _RUNTIME_SCRIPT, *paths], cwd=REPO_ROOT,
                          env=_clean_env(MAE_MM_DISABLE_CROP_DECODE='1'), capture_output=True,
                          text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == dict(available=False, again=None, shapes=[[24, 24, 3], [32, 32, 3]],
                          calls=32)
    assert output.count(PHRASE) == 1, output[-3000:]
    warning = next(line for line in output.splitlines() if PHRASE in line)
    assert 'WARNING' in warning
    for words in (*PACKAGES, 'reinstall mae-mm', 'decoded whole', 'same pixels',
                  'disabled by MAE_MM_DISABLE_CROP_DECODE=1'):
        assert words in warning, words


def test_disable_env_var_zero_keeps_the_extension(photo_folder):
    """=0 (or unset) changes nothing: no warning where the extension is built."""
    if not crop_decode.available():
        pytest.skip('the extension is not built here')
    path = osp.join(photo_folder, sorted(os.listdir(photo_folder))[0])
    proc = subprocess.run([sys.executable, '-c', _RUNTIME_SCRIPT, path], cwd=REPO_ROOT,
                          env=_clean_env(MAE_MM_DISABLE_CROP_DECODE='0'), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])['available'] is True
    assert PHRASE not in proc.stdout + proc.stderr


def test_warning_in_process_once_and_only_for_the_paths_that_use_it(monkeypatch, mmengine_logs):
    monkeypatch.setattr(crop_decode, '_crop_decode', None)
    monkeypatch.setattr(crop_decode, '_unavailable_reason',
                        "not importable: No module named 'mae_mm.datasets.transforms._crop_decode'")
    monkeypatch.setattr(crop_decode, '_warned', False)
    # Without region decoding the extension is never used: nothing to say.
    FastRandomResizedCrop(scale=16, interpolation='bicubic', region_decode=False)
    assert not any(PHRASE in m for m in mmengine_logs)
    crops = [FastRandomResizedCrop(scale=16, interpolation='bicubic') for _ in range(3)]
    rng = np.random.default_rng(0)
    for _ in range(4):
        for crop in crops:
            img = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
            assert crop(dict(img=img))['img'].shape == (16, 16, 3)
    warnings = [m for m in mmengine_logs if PHRASE in m]
    assert len(warnings) == 1
    assert "No module named 'mae_mm.datasets.transforms._crop_decode'" in warnings[0]
    assert all(p in warnings[0] for p in PACKAGES)
    assert crop_decode.warn_if_unavailable() is None


def test_no_warning_when_the_extension_is_there(monkeypatch, mmengine_logs):
    if not crop_decode.available():
        pytest.skip('the extension is not built here')
    monkeypatch.setattr(crop_decode, '_warned', False)
    FastRandomResizedCrop(scale=16, interpolation='bicubic')
    assert crop_decode.warn_if_unavailable() is None
    assert not any(PHRASE in m for m in mmengine_logs)


def _setup_module():
    spec = importlib.util.spec_from_file_location('mae_mm_setup_py',
                                                  osp.join(REPO_ROOT, 'setup.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines only: setup() runs under __main__
    return module


def _check_block(text, what):
    """The block between its two rules says what failed, what runs instead and the fix."""
    rule = '=' * 78
    assert text.count(rule) == 2, text
    start = text.index(rule)
    text = text[start:text.index(rule, start + 1) + len(rule)]
    assert f'WARNING: mae-mm: {what} was NOT built' in text
    for words in (*PACKAGES, 'reinstall', 'FastRandomResizedCrop', 'same pixels'):
        assert words in text, words


def test_setup_py_failure_handlers_print_a_warning_block(monkeypatch, capsys):
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext
    from setuptools.errors import CompileError, PlatformError
    setup_py = _setup_module()
    command = setup_py.OptionalBuildExt(Distribution(dict(
        name='mae-mm', ext_modules=[setup_py.CROP_DECODE])))

    def failing_build(self, ext):
        raise CompileError("command '/usr/bin/gcc' failed with exit code 1")

    monkeypatch.setattr(build_ext, 'build_extension', failing_build)
    command.build_extension(setup_py.CROP_DECODE)  # does not raise
    captured = capsys.readouterr()
    _check_block(captured.err, 'mae_mm.datasets.transforms._crop_decode')
    assert "CompileError: command '/usr/bin/gcc' failed with exit code 1" in captured.err
    assert captured.err.count('WARNING') == 1

    def failing_run(self):
        raise PlatformError("don't know how to compile C/C++ code on platform 'posix'")

    monkeypatch.setattr(build_ext, 'run', failing_run)
    command.run()
    _check_block(capsys.readouterr().err, 'the JPEG region decoder')


def test_setup_py_prints_the_block_on_a_real_failed_compile(tmp_path):
    """A real build through OptionalBuildExt of a C file whose header is missing (as jpeglib.h
    without libjpeg62-turbo-dev): the build exits 0 and prints the block once."""
    (tmp_path / 'broken.c').write_text('#include <mae_mm_no_such_header.h>\n')
    setup_path = osp.join(REPO_ROOT, 'setup.py')
    script = textwrap.dedent(f'''
        import importlib.util
        from setuptools import Extension, setup
        spec = importlib.util.spec_from_file_location('setup_py', {setup_path!r})
        setup_py = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(setup_py)
        setup(name='broken', ext_modules=[Extension('broken_ext', sources=['broken.c'])],
              cmdclass={{'build_ext': setup_py.OptionalBuildExt}},
              script_args=['-q', 'build_ext', '--build-temp', 'tmp', '--build-lib', 'lib'])
    ''')
    proc = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert proc.stderr.count('was NOT built') == 1, proc.stderr[-3000:]
    _check_block(proc.stderr, 'broken_ext')
    assert not (tmp_path / 'lib').exists() or not list((tmp_path / 'lib').rglob('*.so'))
