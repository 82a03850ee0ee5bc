"""`pip install .` (non-editable) ships configs, tools and model-index under mae_mm/.mim."""
import glob
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

from .conftest import REPO_ROOT


def test_wheel_ships_mim_folder_and_installs(tmp_path):
    src = tmp_path / 'src'
    # A copy, so that the build does not write .mim/ or build/ into the working tree.
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.git', '.cache', 'work_dirs', 'data', 'build', '*.egg-info', '__pycache__',
        '.mim'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                    '-q', '-w', str(tmp_path / 'dist'), str(src)], check=True)
    wheel = glob.glob(str(tmp_path / 'dist' / 'mae_mm-*.whl'))[0]
    names = zipfile.ZipFile(wheel).namelist()
    assert 'mae_mm/.mim/model-index.yml' in names
    assert 'mae_mm/.mim/configs/mae_vit-l_1600e.py' in names
    assert 'mae_mm/.mim/configs/mae/metafile.yml' in names
    assert 'mae_mm/.mim/tools/train.py' in names and 'mae_mm/.mim/tools/dist_train.sh' in names
    assert not any(n.startswith(('tests/', 'projects/')) for n in names)

    # Installed into a fresh venv (without dependencies: only the layout is checked here).
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    site = subprocess.run([str(venv / 'bin' / 'python'), '-c',
                           'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', site,
                    wheel], check=True)
    assert osp.isfile(osp.join(site, 'mae_mm', '.mim', 'model-index.yml'))
    assert osp.isfile(osp.join(site, 'mae_mm', '.mim', 'configs', 'mae', 'metafile.yml'))
