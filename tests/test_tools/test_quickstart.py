"""The README's quick start, shortened: trains through the Runner and writes the figure."""
import os.path as osp
import subprocess
import sys

from PIL import Image

from ..conftest import REPO_ROOT


def test_quickstart_smoke(tmp_path):
    work_dir, data_dir = tmp_path / 'work', tmp_path / 'data'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'quickstart.py'), '--iters', '6',
         '--num-images', '64', '--work-dir', str(work_dir), '--data-dir', str(data_dir)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figure = work_dir / 'reconstruction.png'
    assert f'reconstruction figure: {figure}' in proc.stdout
    assert (work_dir / 'iter_6.pth').is_file()
    with Image.open(figure) as img:
        img.verify()
    with Image.open(figure) as img:
        width, height = img.size
        assert img.format == 'PNG' and height > width > 300  # 6 rows x 4 columns
