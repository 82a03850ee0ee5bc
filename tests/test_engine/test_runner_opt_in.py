"""mae-mm's runner is opt-in, and neither it nor stock mmengine ever starts over on top of
checkpoints it cannot read.

The case that lost data before: mmengine checkpoints a process could not read safely were skipped
by auto-resume, the run started from scratch and wrote its new epoch_1.pth/epoch_2.pth over them.
"""
import hashlib
import multiprocessing
import os
import os.path as osp
import pickle
import signal
import time

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mae_mm.engine import MAERunner, build_runner
from mae_mm.utils.compat import UnsafeCheckpointError, mmengine_lacks_safe_loading
from .test_reliability_utils import one_intra_op_thread, small_cfg  # noqa: F401

pytestmark = pytest.mark.usefixtures('one_intra_op_thread')


class RunNote:
    """A user's object in a checkpoint: not on any safe allow-list."""

    def __init__(self, text: str) -> None:
        self.text = text


class AddsNoteToCheckpoints(Hook):

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['meta']['note'] = RunNote('written by a plain mmengine run')


def _digests(work_dir) -> dict:
    return {name: hashlib.sha256(open(osp.join(work_dir, name), 'rb').read()).hexdigest()
            for name in sorted(os.listdir(work_dir)) if name.endswith('.pth')}


def _stock_cfg(photo_folder, work_dir, **overrides):
    """The pretraining config without mae-mm's runner: mmengine's stock Runner."""
    cfg = small_cfg(photo_folder, work_dir, **overrides)
    cfg.pop('runner_type')
    return cfg


def test_default_runtime_selects_mae_runner_and_without_it_mmengine_runner(photo_folder,
                                                                          tmp_path):
    assert type(build_runner(small_cfg(photo_folder, tmp_path / 'a'))) is MAERunner
    assert type(build_runner(_stock_cfg(photo_folder, tmp_path / 'b'))) is Runner


def test_unreadable_checkpoints_stop_the_run_and_are_never_overwritten(photo_folder, tmp_path):
    """Checkpoints of a plain mmengine run that pickle a user's object: resuming stops with one
    line naming the files and the opt-in, in mae-mm's runner and in stock mmengine; the files are
    unchanged. With the opt-in, mae-mm's runner resumes from the newest one."""
    work_dir = tmp_path / 'run'
    runner = build_runner(_stock_cfg(photo_folder, work_dir, max_epochs=2))
    runner.register_hook(AddsNoteToCheckpoints())
    runner.train()
    before = _digests(work_dir)
    assert set(before) == {'epoch_1.pth', 'epoch_2.pth'}
    if not hasattr(torch.serialization, 'safe_globals'):
        # torch < 2.5 has no allow-list and unpickles fully, as mmengine does there: the files
        # are readable, so the run resumes from the newest and keeps them.
        resumed = build_runner(small_cfg(photo_folder, work_dir, max_epochs=3, resume=True))
        resumed.train()
        after = _digests(work_dir)
        assert resumed.iter == 12 and {k: after[k] for k in before} == before
        return

    with pytest.raises(UnsafeCheckpointError) as error:
        build_runner(small_cfg(photo_folder, work_dir, max_epochs=3, resume=True)).train()
    message = str(error.value)
    assert '\n' not in message and 'MAE_MM_TRUSTED_CHECKPOINTS=1' in message
    assert "['epoch_1.pth', 'epoch_2.pth']" in message and 'nothing was overwritten' in message
    assert _digests(work_dir) == before

    # Stock mmengine, nothing patched any more: torch's safe loader refuses the file; the run
    # stops before training and writes nothing.
    if mmengine_lacks_safe_loading():
        with pytest.raises(pickle.UnpicklingError):
            build_runner(_stock_cfg(photo_folder, work_dir, max_epochs=3, resume=True)).train()
        assert _digests(work_dir) == before

    os.environ['MAE_MM_TRUSTED_CHECKPOINTS'] = '1'
    try:
        resumed = build_runner(small_cfg(photo_folder, work_dir, max_epochs=3, resume=True))
        resumed.train()
    finally:
        del os.environ['MAE_MM_TRUSTED_CHECKPOINTS']
    assert resumed.epoch == 3 and resumed.iter == 12
    after = _digests(work_dir)
    assert {k: after[k] for k in before} == before and 'epoch_3.pth' in after


def test_plain_mmengine_checkpoints_resume_in_mae_runner(photo_folder, tmp_path):
    """The user's case of the issue: checkpoints written by stock mmengine (HistoryBuffer and
    all) are resumed, not skipped, by mae-mm's runner."""
    work_dir = tmp_path / 'run'
    build_runner(_stock_cfg(photo_folder, work_dir, max_epochs=2)).train()
    before = _digests(work_dir)
    resumed = build_runner(small_cfg(photo_folder, work_dir, max_epochs=3, resume=True))
    resumed.load_or_resume()
    assert resumed.iter == 8 and resumed.epoch == 2  # resumed at the end of epoch 2
    resumed.train()
    assert resumed.iter == 12
    after = _digests(work_dir)
    assert {k: after[k] for k in before} == before


def _train_until_killed(cfg, marker: str) -> None:
    """Train; the second checkpoint's bytes stop half-way to disk (as when a node dies during
    the write) and the process waits there to be killed. The slow disk is simulated in this
    child process only, at mmengine's file back end, for the run of either runner."""
    from mmengine.fileio.backends.local_backend import LocalBackend
    write = LocalBackend.put
    calls = []

    def put_half_then_hang(self, obj: bytes, filepath) -> None:
        calls.append(filepath)
        if len(calls) < 2:
            return write(self, obj, filepath)
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
        open(marker, 'w').close()
        time.sleep(120)

    LocalBackend.put = put_half_then_hang
    torch.set_num_threads(1)
    build_runner(cfg).train()


def _kill_during_second_save(cfg, tmp_path) -> None:
    marker = str(tmp_path / f'writing_{time.time_ns()}')
    process = multiprocessing.get_context('fork').Process(target=_train_until_killed,
                                                          args=(cfg, marker))
    process.start()
    deadline = time.time() + 240
    while not osp.exists(marker) and time.time() < deadline and process.is_alive():
        time.sleep(0.01)
    assert osp.exists(marker), 'the run never reached its second checkpoint'
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=60)


def test_mae_runner_killed_while_writing_keeps_the_previous_checkpoint(photo_folder, tmp_path):
    """A run killed while the Runner writes epoch_2.pth: with mae-mm's runner no epoch_2.pth
    exists (only its partial hidden temporary file) and auto-resume takes epoch_1.pth; stock
    mmengine, killed the same way, leaves a truncated epoch_2.pth under the final name."""
    mae_dir, stock_dir = tmp_path / 'mae', tmp_path / 'stock'
    _kill_during_second_save(small_cfg(photo_folder, mae_dir, max_epochs=2), tmp_path)
    names = sorted(os.listdir(mae_dir))
    assert 'epoch_1.pth' in names and 'epoch_2.pth' not in names, names
    assert '.epoch_2.pth.tmp' in names
    resumed = build_runner(small_cfg(photo_folder, mae_dir, max_epochs=2, resume=True))
    resumed.load_or_resume()
    assert resumed.epoch == 1 and resumed.iter == 4

    _kill_during_second_save(_stock_cfg(photo_folder, stock_dir, max_epochs=2), tmp_path)
    truncated = stock_dir / 'epoch_2.pth'
    assert truncated.exists()
    assert truncated.stat().st_size < (stock_dir / 'epoch_1.pth').stat().st_size
