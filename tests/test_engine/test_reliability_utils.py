"""Helpers shared by the reliability tests (no tests here)."""
import os.path as osp
import time

import pytest
import torch

from ..conftest import tiny_pretrain_cfg


@pytest.fixture
def one_intra_op_thread():
    """Train in-process with one intra-op thread: on a busy 2-core machine a second OpenMP
    thread spin-waits, which makes these tiny iterations 100 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_cfg(photo_folder, work_dir, **overrides):
    """The real pretraining config on 16 photos in batches of 4: 4 iterations per epoch."""
    return tiny_pretrain_cfg(photo_folder, work_dir, batch_size=4,
                             experiment_name=f'{osp.basename(str(work_dir))}_{time.time_ns()}',
                             **{'train_dataloader.dataset.indices': 16}, **overrides)
