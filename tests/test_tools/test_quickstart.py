"""The README's quick start, shortened: trains through the Runner, writes the figure, resumes;
its figure shows the model's prediction (no hidden-patch statistics), of crops with structure."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import torch
from mmengine.config import Config
from PIL import Image

from mae_mm.datasets.embedded_photos import (crop_structure, write_photo_crops,
                                             write_structured_crops)
from mae_mm.registry import MODELS
from mae_mm.visualization import mask_noise

from ..conftest import REPO_ROOT

QUICKSTART = osp.join(REPO_ROOT, 'tools', 'quickstart.py')
CONFIG = osp.join(REPO_ROOT, 'configs', 'quickstart', 'mae_vit-tiny-p4_1xb64-1000i_photos-32px.py')


def _run(*args, cwd):
    return subprocess.run([sys.executable, QUICKSTART, *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS='1'))


def test_quickstart_smoke_and_resume(tmp_path):
    work_dir, data_dir = tmp_path / 'work', tmp_path / 'data'
    common = ['--iters', '8', '--num-images', '64', '--work-dir', str(work_dir), '--data-dir',
              str(data_dir)]
    proc = _run(*common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figure = work_dir / 'reconstruction.png'
    assert f'reconstruction figure: {figure}' in proc.stdout
    # A checkpoint every quarter of the run, the newest two kept.
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_6.pth', 'iter_8.pth']
    with Image.open(figure) as img:
        img.verify()
    with Image.open(figure) as img:
        width, height = img.size
        assert img.format == 'PNG' and height > width > 300  # 6 rows x 4 columns
    assert len(os.listdir(data_dir / 'held_out')) == 6

    # An interrupted run (its last checkpoint never written) continues with --resume.
    (work_dir / 'iter_8.pth').unlink()
    proc = _run(*common, '--resume', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 6' in log
    assert 'Iter(train) [8/8]' in log and 'Iter(train) [2/8]' not in log
    assert (work_dir / 'iter_8.pth').is_file()


def test_quickstart_model_predicts_pixels_without_hidden_patch_statistics():
    """The defect: a norm-pix model's figure de-normalises each hidden patch with that patch's
    true mean and std, so changing the hidden pixels changes the "prediction". The quick-start
    model predicts unnormalised pixels: its reconstruction of hidden patches does not depend on
    what they hold."""
    cfg = Config.fromfile(CONFIG)
    assert cfg.model.head.norm_pix is False

    def hidden_reconstruction(norm_pix):
        model_cfg = cfg.model.copy()
        model_cfg.head = dict(model_cfg.head, norm_pix=norm_pix)
        torch.manual_seed(0)
        model = MODELS.build(model_cfg).eval()
        imgs = torch.randn(2, 3, 32, 32)
        noise = mask_noise(model, 2, (8, 8), seed=0)
        with torch.no_grad():
            first = model.reconstruct(imgs, noise=noise)
            hidden = first['mask'].bool().expand_as(imgs)
            changed = torch.where(hidden, imgs * 3 + 1, imgs)  # other hidden content
            second = model.reconstruct(changed, noise=noise)
        return first['reconstruction'][hidden], second['reconstruction'][hidden]

    a, b = hidden_reconstruction(norm_pix=False)
    assert torch.equal(a, b)
    a, b = hidden_reconstruction(norm_pix=True)  # what the figure showed before
    assert not torch.allclose(a, b, atol=1e-3)


def test_held_out_crops_show_structure_and_are_seeded(tmp_path):
    paths = write_structured_crops(str(tmp_path / 'a'), num_images=6, seed=1)
    again = write_structured_crops(str(tmp_path / 'b'), num_images=6, seed=1)
    assert [osp.basename(p) for p in paths] == [f'photo_{i:05d}.jpg' for i in range(6)]
    for p, q in zip(paths, again):
        with open(p, 'rb') as f, open(q, 'rb') as g:
            assert f.read() == g.read()

    def structure(path):
        with Image.open(path) as img:
            return crop_structure(np.asarray(img.convert('RGB')))

    chosen = [structure(p) for p in paths]
    assert all(std >= 28 for std, _ in chosen), chosen  # 30 before JPEG compression
    # Random crops of the same photographs (as the held-out set was drawn before) include
    # near-uniform ones (25 of 60 here below std 30) and have less edge content.
    write_photo_crops(str(tmp_path / 'random'), num_images=60, seed=1, min_size=64,
                      max_size=160)
    random_crops = [structure(str(tmp_path / 'random' / f))
                    for f in sorted(os.listdir(tmp_path / 'random'))]
    assert min(std for std, _ in random_crops) < 10
    random_edges = [e for _, e in random_crops]
    assert np.mean([e for _, e in chosen]) > np.percentile(random_edges, 75)
    assert min(e for _, e in chosen) > np.percentile(random_edges, 25)
