"""Unreadable images in a training folder: skipped with a warning and a count in the run's log."""
import os.path as osp
import re
import shutil
import time

import pytest

from mae_mm.datasets import reset_skipped_image_count, skipped_image_count
from mae_mm.engine import build_runner
from ..conftest import tiny_pretrain_cfg
from .test_reliability_utils import one_intra_op_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures('one_intra_op_thread')


def test_corrupt_images_are_skipped_with_the_count_in_the_log(photo_folder, tmp_path):
    """Two data-loader workers meet one bad file each; the log names both files and counts the
    rank's skips across the workers (1, then 2); all iterations run with full batches."""
    folder = tmp_path / 'photos'
    folder.mkdir()
    for i in range(16):
        shutil.copy(osp.join(photo_folder, f'img_{i:03d}.jpg'), folder)
    corrupt, truncated = folder / 'img_001.jpg', folder / 'img_005.jpg'
    corrupt.write_bytes(b'not a jpeg at all' * 20)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    reset_skipped_image_count()

    # Unshuffled batches of 4 go to the workers in turn: img_001 to worker 0, img_005 to
    # worker 1, so that a per-worker count would say 1 twice.
    cfg = tiny_pretrain_cfg(str(folder), tmp_path / 'work', batch_size=4, max_epochs=1,
                            experiment_name=f'{tmp_path.name}_{time.time_ns()}', **{
                                'train_dataloader.num_workers': 2,
                                'train_dataloader.sampler.shuffle': False})
    runner = build_runner(cfg)
    runner.train()
    assert runner.iter == 4

    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        warnings = [line for line in f if 'skipping unreadable image' in line]
    for bad in (corrupt, truncated):
        assert any(str(bad) in line for line in warnings), (bad, warnings)
    counts = {int(m.group(1)) for line in warnings
              for m in [re.search(r'\((\d+) skipped so far on this rank\)', line)] if m}
    assert {1, 2} <= counts, warnings
    assert skipped_image_count() >= 2  # the workers' skips, seen from the training process
