"""ReconstructionVisualizationHook in a real Runner, writing through LocalVisBackend."""
import glob
import os.path as osp
import types

import numpy as np
import pytest
import torch
from PIL import Image

from mae_mm.engine.hooks import ReconstructionVisualizationHook
from mae_mm.registry import HOOKS
from mae_mm.visualization import (load_images_for_model, mask_noise, reconstruct_with_seed,
                                  reconstruction_figure_array)

from ._tiny_runs import run_tiny_pretraining

HOOK = dict(type='ReconstructionVisualizationHook', interval=2, num_images=3, seed=1)


def test_hook_writes_the_grid_of_fixed_images_through_the_visualizer(photo_folder, tmp_path):
    # 2 epochs x 2 iterations: drawn after iterations 2 and 4.
    runner = run_tiny_pretraining(photo_folder, tmp_path / 'work', epochs=2,
                                  custom_hooks=[HOOK])
    written = sorted(glob.glob(str(tmp_path / 'work' / '*' / 'vis_data' / 'vis_image' / '*')))
    assert [osp.basename(p) for p in written] == ['reconstruction_2.png',
                                                  'reconstruction_4.png']
    assert osp.dirname(osp.dirname(written[0])) == runner.visualizer._vis_backends[
        'LocalVisBackend']._save_dir
    hook = next(h for h in runner.hooks if isinstance(h, ReconstructionVisualizationHook))
    dataset = runner.train_dataloader.dataset
    # The images: first, middle and last of the training set.
    assert hook.image_paths == [dataset.get_data_info(i)['img_path'] for i in (0, 4, 7)]
    # The last figure is exactly the grid of those images under the fixed seed-1 mask,
    # redrawn here from the trained model.
    model = runner.model.eval()
    imgs = load_images_for_model(model, hook.image_paths, model.backbone.img_size)
    _, panels = reconstruct_with_seed(model, imgs, noise=mask_noise(model, 3, (4, 4), seed=1))
    expected = reconstruction_figure_array(panels, title='iteration 4, mask ratio 0.75',
                                           norm_pix=True)
    with Image.open(written[1]) as img:
        assert np.array_equal(np.asarray(img.convert('RGB')), expected)
    with Image.open(written[0]) as img:  # an earlier model draws a different grid
        assert not np.array_equal(np.asarray(img.convert('RGB')), expected)


def test_hook_leaves_the_training_run_unchanged(photo_folder, tmp_path):
    with_hook = run_tiny_pretraining(photo_folder, tmp_path / 'a', custom_hooks=[
        dict(HOOK, interval=1, draw_before_train=True)])
    without = run_tiny_pretraining(photo_folder, tmp_path / 'b')
    state_a, state_b = with_hook.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert with_hook.model.training  # train mode restored after drawing
    names = glob.glob(str(tmp_path / 'a' / '*' / 'vis_data' / 'vis_image' / '*.png'))
    assert sorted(osp.basename(p) for p in names) == [
        'reconstruction_0.png', 'reconstruction_1.png', 'reconstruction_2.png']


def test_hook_settings_are_checked_before_training(photo_folder):
    assert HOOKS.get('ReconstructionVisualizationHook') is ReconstructionVisualizationHook
    with pytest.raises(ValueError, match='interval must be a positive int'):
        ReconstructionVisualizationHook(interval=0)
    with pytest.raises(FileNotFoundError, match='image_paths') as err:
        ReconstructionVisualizationHook(image_paths=[osp.join(photo_folder, 'nope.jpg')])
    assert '\n' not in str(err.value)
    # A training set without files (arrays in memory) needs explicit image_paths.
    from mae_mm.datasets import ArrayImageDataset
    dataset = ArrayImageDataset(images=np.zeros((4, 8, 8, 3), dtype=np.uint8))
    runner = types.SimpleNamespace(train_dataloader=types.SimpleNamespace(dataset=dataset),
                                   model=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r'set image_paths=\[\.\.\.\]'):
        ReconstructionVisualizationHook(num_images=2).before_train(runner)
    hook = ReconstructionVisualizationHook(image_paths=[osp.join(photo_folder, 'img_000.jpg')])
    hook.before_train(runner)  # given paths: the data set is not consulted
    assert hook.image_paths == [osp.join(photo_folder, 'img_000.jpg')]


def _log_text(runner) -> str:
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return f.read()


@pytest.fixture
def folder_with_empty_png(photo_folder, tmp_path):
    """8 real photos and an empty ``.png`` (first in sorted order: image 0 of the set), which the
    data loader's LoadImageSafe skips."""
    import shutil
    folder = tmp_path / 'photos'
    folder.mkdir()
    for i in range(8):
        shutil.copy(osp.join(photo_folder, f'img_{i:03d}.jpg'), folder)
    (folder / 'empty.png').write_bytes(b'')
    return str(folder)


def test_unreadable_image_is_passed_over_and_the_run_finishes(folder_with_empty_png, tmp_path):
    # Before: OSError "cannot decode image file '.../empty.png'" at the first drawing, and the
    # last epoch's checkpoint never written.
    work = tmp_path / 'work'
    runner = run_tiny_pretraining(folder_with_empty_png, work, epochs=2, images=9,
                                  custom_hooks=[dict(HOOK, draw_before_train=True)])
    assert runner.epoch == 2 and osp.isfile(work / 'epoch_2.pth')
    hook = next(h for h in runner.hooks if isinstance(h, ReconstructionVisualizationHook))
    empty = osp.join(folder_with_empty_png, 'empty.png')
    dataset = runner.train_dataloader.dataset
    assert dataset.get_data_info(0)['img_path'] == empty
    # The empty image 0 is replaced by the next readable one; middle and last as before.
    assert hook.image_paths == [dataset.get_data_info(i)['img_path'] for i in (1, 4, 8)]
    assert hook.num_failures == 0
    written = glob.glob(str(work / '*' / 'vis_data' / 'vis_image' / '*.png'))
    assert sorted(osp.basename(p) for p in written) == [
        'reconstruction_0.png', 'reconstruction_2.png', 'reconstruction_4.png',
        'reconstruction_6.png']  # 9 images in batches of 4: 3 iterations per epoch, 6 in all
    assert 'unreadable training image(s) passed over (first: ' + empty in _log_text(runner)


def test_explicit_unreadable_image_paths_are_left_out(folder_with_empty_png, tmp_path):
    good = osp.join(folder_with_empty_png, 'img_003.jpg')
    runner = run_tiny_pretraining(folder_with_empty_png, tmp_path / 'work', images=8, custom_hooks=[
        dict(HOOK, image_paths=[osp.join(folder_with_empty_png, 'empty.png'), good])])
    hook = next(h for h in runner.hooks if isinstance(h, ReconstructionVisualizationHook))
    assert hook.image_paths == [good] and hook.num_failures == 0
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
    assert 'unreadable image_paths left out' in _log_text(runner)


def test_a_failing_figure_never_stops_training(photo_folder, tmp_path, monkeypatch):
    import mae_mm.visualization

    def broken(*args, **kwargs):
        raise RuntimeError('visualizer backend unavailable')

    monkeypatch.setattr(mae_mm.visualization, 'reconstruction_figure_array', broken)
    work = tmp_path / 'work'
    runner = run_tiny_pretraining(photo_folder, work, epochs=2,
                                  custom_hooks=[dict(HOOK, interval=1)])
    assert runner.epoch == 2 and osp.isfile(work / 'epoch_2.pth')
    assert runner.model.training  # train mode restored after the failed drawing
    hook = next(h for h in runner.hooks if isinstance(h, ReconstructionVisualizationHook))
    assert hook.num_failures == 4  # every drawing failed ...
    log = _log_text(runner)
    # ... and the error is logged once, on one line.
    assert log.count('ReconstructionVisualizationHook: no figure') == 1
    line = next(l for l in log.splitlines() if 'no figure' in l)
    assert 'RuntimeError: visualizer backend unavailable' in line and 'training goes on' in line
