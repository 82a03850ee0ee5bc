"""tools/visualization/reconstruct.py on checkpoints of a real (tiny) pretraining run."""
import glob
import os
import os.path as osp
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mae_mm.utils.checkpoint import convert_state_dict, save_checkpoint_atomic
from mae_mm.utils.compat import load_checkpoint_file

from ..conftest import REPO_ROOT
from ..test_visualization._tiny_runs import load_tool, run_tiny_pretraining

TOOL = osp.join(REPO_ROOT, 'tools', 'visualization', 'reconstruct.py')


def _tool():
    return load_tool('visualization', 'reconstruct.py')


@pytest.fixture(scope='module')
def trained(photo_folder, tmp_path_factory):
    """A mae-mm checkpoint written by the Runner (norm-pix model, 32 px, patch 8)."""
    work_dir = tmp_path_factory.mktemp('recon_run')
    runner = run_tiny_pretraining(photo_folder, work_dir)
    runner.cfg.dump(str(work_dir / 'config.py'))
    return dict(checkpoint=str(work_dir / 'epoch_1.pth'), config=str(work_dir / 'config.py'),
                dir=work_dir)


def _visible(arrays):
    return arrays['mask'][:, 0] == 0  # (N, H, W)


def test_cli_draws_the_grid_and_pastes_the_input_back_exactly(trained, photo_folder, tmp_path):
    out, arrays_path = tmp_path / 'grid.png', tmp_path / 'grid.npz'
    proc = subprocess.run(
        [sys.executable, TOOL, trained['checkpoint'], photo_folder, '--max-images', '3',
         '--img-size', '32', '48', '--seed', '5', '--out', str(out), '--save-arrays',
         str(arrays_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'model settings: the config stored in the checkpoint' in proc.stdout
    assert f'reconstruction figure (3 images, 32x48): {out}' in proc.stdout
    with Image.open(out) as img:
        assert img.format == 'PNG' and img.width > img.height  # 4 columns x 48 px, 3 rows x 32
    arrays = np.load(arrays_path)
    # A seeded sample across the folder (--image-seed 0), in folder order, not its first files.
    every = sorted(glob.glob(osp.join(photo_folder, '*.jpg')))
    sample = [every[i] for i in sorted(random.Random(0).sample(range(len(every)), 3))]
    assert [str(p) for p in arrays['image_paths']] == sample != every[:3]
    panels = arrays['panels']
    assert panels.shape == (3, 4, 32, 48, 3)
    visible = _visible(arrays)
    assert visible.sum() == 3 * 6 * 64  # 6 of the 24 patches of 8x8 visible per image
    pasted, inputs = arrays['pasted'].transpose(0, 2, 3, 1), arrays['input'].transpose(0, 2, 3, 1)
    assert np.array_equal(pasted[visible], inputs[visible])
    assert np.array_equal(panels[:, 3][visible], panels[:, 0][visible])
    assert not np.array_equal(panels[:, 3][~visible], panels[:, 0][~visible])


def test_official_format_checkpoint_gives_the_same_numbers(trained, photo_folder, tmp_path):
    ckpt = load_checkpoint_file(trained['checkpoint'])
    official = tmp_path / 'official.pth'
    save_checkpoint_atomic({'model': convert_state_dict(ckpt, 'official').state_dict}, official)
    tool = _tool()
    common = [photo_folder, '--max-images', '2', '--seed', '2']
    tool.main([trained['checkpoint'], *common, '--out', str(tmp_path / 'a.png'),
               '--save-arrays', str(tmp_path / 'a.npz')])
    # Official file + the training config: loaded straight into MaskedAutoencoder.
    tool.main([str(official), *common, '--config', trained['config'], '--out',
               str(tmp_path / 'b.png'), '--save-arrays', str(tmp_path / 'b.npz')])
    a, b = np.load(tmp_path / 'a.npz'), np.load(tmp_path / 'b.npz')
    for key in ('input', 'reconstruction', 'pasted', 'mask', 'panels'):
        assert np.array_equal(a[key], b[key]), key


def test_mask_ratio_and_seed(trained, photo_folder, tmp_path):
    tool = _tool()

    def run(name, *extra):
        tool.main([trained['checkpoint'], photo_folder, '--max-images', '2', '--out',
                   str(tmp_path / f'{name}.png'), '--save-arrays', str(tmp_path / f'{name}.npz'),
                   *extra])
        return np.load(tmp_path / f'{name}.npz')

    half = run('half', '--mask-ratio', '0.5', '--seed', '1')
    assert (~_visible(half)).sum() == 2 * 8 * 64  # 8 of 16 patches hidden per image
    again = run('again', '--mask-ratio', '0.5', '--seed', '1')
    assert np.array_equal(half['panels'], again['panels'])
    other = run('other', '--mask-ratio', '0.5', '--seed', '2')
    assert not np.array_equal(half['mask'], other['mask'])


def test_bad_input_fails_in_one_line(trained, photo_folder, tmp_path):
    tool = _tool()
    out = ['--out', str(tmp_path / 'x.png')]
    cases = [
        ([trained['checkpoint'], photo_folder, '--img-size', '30', *out],
         'not a multiple of the patch size 8'),
        ([trained['checkpoint'], str(tmp_path / 'missing.jpg'), *out], 'does not exist'),
        ([trained['checkpoint'], photo_folder, '--mask-ratio', '1.5', *out],
         r'--mask-ratio must be in \(0, 1\)'),
    ]
    ckpt = load_checkpoint_file(trained['checkpoint'])
    encoder_only = tmp_path / 'encoder.pth'
    save_checkpoint_atomic({'state_dict': {k: v for k, v in ckpt['state_dict'].items()
                                           if k.startswith('backbone.')}}, encoder_only)
    cases.append(([str(encoder_only), photo_folder, *out], 'no MAE decoder'))
    for argv, message in cases:
        with pytest.raises(SystemExit, match=message) as err:
            tool.main(argv)
        assert '\n' not in str(err.value.code)
    assert not (tmp_path / 'x.png').exists()


def test_hugging_face_folder_gives_the_same_numbers(trained, photo_folder, tmp_path):
    """The trained checkpoint as a Hugging Face ViTMAEForPreTraining folder (written by
    tools/model_converters/mae_mm_to_hf.py, pytorch_model.bin): the tool rebuilds the model from
    its config.json and preprocessor_config.json and draws the same figure."""
    folder = tmp_path / 'vit-mae-tiny'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'model_converters', 'mae_mm_to_hf.py'),
         trained['checkpoint'], str(folder), '--bin', '--quiet'],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(folder)) == ['config.json', 'preprocessor_config.json',
                                          'pytorch_model.bin']
    tool = _tool()
    common = [photo_folder, '--max-images', '2', '--seed', '3']
    tool.main([trained['checkpoint'], *common, '--out', str(tmp_path / 'a.png'),
               '--save-arrays', str(tmp_path / 'a.npz')])
    tool.main([str(folder), *common, '--out', str(tmp_path / 'b.png'),
               '--save-arrays', str(tmp_path / 'b.npz')])
    a, b = np.load(tmp_path / 'a.npz'), np.load(tmp_path / 'b.npz')
    for key in ('input', 'reconstruction', 'pasted', 'mask', 'panels'):
        assert np.array_equal(a[key], b[key]), key


def test_images_are_sampled_across_folders_with_a_seed(photo_folder, tmp_path):
    tool = _tool()
    every = sorted(glob.glob(osp.join(photo_folder, '*.jpg')))
    first = tool.collect_images([photo_folder], 8, seed=0)
    assert len(first) == 8 and first == sorted(first) and set(first) <= set(every)
    assert first != every[:8] and first == tool.collect_images([photo_folder], 8, seed=0)
    assert tool.collect_images([photo_folder], 8, seed=1) != first
    assert max(every.index(p) for p in first) >= 32  # from the whole folder
    # Files given explicitly come first and are always kept; a folder that fits is kept whole.
    chosen = tool.collect_images([every[5], photo_folder], 3, seed=0)
    assert chosen[0] == every[5] and len(chosen) == 3
    assert tool.collect_images([photo_folder], 100) == every


def test_unreadable_image_names_a_real_option(trained, photo_folder, tmp_path):
    """An unreadable file stops the tool with a hint naming an option it has
    (--skip-unreadable), which then leaves the file out."""
    folder = tmp_path / 'photos'
    folder.mkdir()
    for path in sorted(glob.glob(osp.join(photo_folder, '*.jpg')))[:2]:
        shutil.copy(path, folder)
    (folder / 'broken.jpg').write_bytes(b'not an image at all')
    tool = _tool()
    out = tmp_path / 'x.png'
    with pytest.raises(SystemExit, match='broken.jpg') as err:
        tool.main([trained['checkpoint'], str(folder), '--out', str(out)])
    message = str(err.value.code)
    assert '\n' not in message and 'LoadImageSafe' not in message
    options = re.findall(r'--[a-z-]+', message)
    assert options == ['--skip-unreadable']
    assert tool.parse_args(['ckpt', 'img', *options]).skip_unreadable is True
    assert not out.exists()
    tool.main([trained['checkpoint'], str(folder), '--skip-unreadable', '--out', str(out),
               '--save-arrays', str(tmp_path / 'x.npz')])
    kept = [osp.basename(p) for p in np.load(tmp_path / 'x.npz')['image_paths']]
    assert out.is_file() and len(kept) == 2 and 'broken.jpg' not in kept
