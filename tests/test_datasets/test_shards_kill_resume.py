"""A run on WebDataset shards killed mid-epoch resumes exactly like the same run on the image
folder: the epoch-based pretraining recipe (EpochBasedTrainLoop, shuffling DefaultSampler,
ExactResumeHook), shrunk, trained uninterrupted on the folder, and on shards of the same images
with ``tools/train.py`` killed with SIGKILL inside an epoch, then resumed (``resume=True``)
with the same config."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from mae_mm.datasets import skipped_image_count
from mae_mm.utils.compat import load_checkpoint_file
from ..conftest import REPO_ROOT, tiny_pretrain_cfg
from ..test_engine.test_reliability_resume import SUBPROCESS_ENV, _assert_same_training_state
from .test_webdataset_shards import train_recording_losses, write

BATCH, EPOCHS = 8, 2
ITERS_PER_EPOCH = 64 // BATCH  # the 64 photos of the photo_folder fixture
MAX_ITERS = EPOCHS * ITERS_PER_EPOCH
CHECKPOINT_INTERVAL = 3  # iterations 3, 6, 9, 12, 15: none at an epoch's end


def epoch_cfg(dataset, work_dir, **overrides):
    """The pretraining recipe (configs/mae_vit-b_1600e.py: EpochBasedTrainLoop, shuffling
    DefaultSampler) shrunk to a tiny ViT on 32 px crops: ``EPOCHS`` epochs in batches of
    ``BATCH``, a checkpoint every ``CHECKPOINT_INTERVAL`` iterations. ``dataset``: the keys of
    ``train_dataloader.dataset`` that a switch from the folder to shards changes."""
    return tiny_pretrain_cfg(dataset['data_root'], work_dir, batch_size=BATCH, max_epochs=EPOCHS, **{
        'experiment_name': f'{osp.basename(str(work_dir))}_{time.time_ns()}',
        'default_hooks.checkpoint': dict(type='CheckpointHook', by_epoch=False,
                                         interval=CHECKPOINT_INTERVAL, max_keep_ckpts=2),
        **{f'train_dataloader.dataset.{k}': v for k, v in dataset.items()},
        **overrides})


def _kill_at_first_checkpoint(process, work_dir, timeout=120) -> bool:
    """SIGKILL ``process`` as soon as a checkpoint appears in ``work_dir`` (complete: MAERunner
    writes it under a temporary name and renames it); False if none appeared while it ran."""
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if work_dir.is_dir() and any(n.startswith('iter_') and n.endswith('.pth')
                                     for n in os.listdir(work_dir)):
            os.kill(process.pid, signal.SIGKILL)
            return True
        time.sleep(0.005)
    return False


def test_a_run_killed_mid_epoch_on_shards_resumes_like_the_folder_run(photo_folder, tmp_path):
    assert write(photo_folder, tmp_path / 'shards', '--shard-size', '100KB') == 0
    shards = dict(type='WebDatasetShards', data_root=str(tmp_path / 'shards'))
    killed_dir = tmp_path / 'killed'
    cfg_path = str(tmp_path / 'shards_cfg.py')
    epoch_cfg(shards, killed_dir).dump(cfg_path)

    log_path = f'{killed_dir}.out'  # a file, not a pipe that could fill up and stall the run
    with open(log_path, 'w') as out:
        killed = subprocess.Popen(
            [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), cfg_path,
             '--work-dir', str(killed_dir)],
            env=SUBPROCESS_ENV, stdout=out, stderr=subprocess.STDOUT)
    with ThreadPoolExecutor(1) as pool:
        try:
            killer = pool.submit(_kill_at_first_checkpoint, killed, killed_dir)
            # meanwhile, the uninterrupted reference run on the folder
            folder_dir = tmp_path / 'folder'
            folder = train_recording_losses(epoch_cfg(dict(data_root=photo_folder), folder_dir))
            assert len(folder) == MAX_ITERS
            saw_checkpoint = killer.result()
        finally:
            if killed.poll() is None:
                killed.kill()
            killed.wait(timeout=60)
    log = open(log_path).read()
    assert saw_checkpoint, f'no checkpoint of the shard run to kill at:\n{log[-3000:]}'
    assert killed.returncode == -signal.SIGKILL, \
        f'the run ended before it was killed:\n{log[-3000:]}'

    survivors = sorted(killed_dir.glob('iter_*.pth'), key=lambda p: int(p.stem.split('_')[1]))
    assert survivors and not (killed_dir / f'iter_{MAX_ITERS}.pth').exists()
    newest = load_checkpoint_file(str(survivors[-1]), map_location='cpu')['meta']
    stopped_at = newest['iter']
    # killed inside an epoch: the checkpoint the run resumes from is not at an epoch's end
    assert 0 < stopped_at < MAX_ITERS and stopped_at % ITERS_PER_EPOCH != 0, stopped_at
    assert newest['epoch'] == stopped_at // ITERS_PER_EPOCH

    # the same run on the shards, resumed from the newest checkpoint in its work_dir
    resumed = train_recording_losses(epoch_cfg(shards, killed_dir, resume=True))
    assert resumed == folder[stopped_at:]  # the remaining batches only, none repeated
    _assert_same_training_state(folder_dir / f'iter_{MAX_ITERS}.pth',
                                killed_dir / f'iter_{MAX_ITERS}.pth')
    assert skipped_image_count() == 0
