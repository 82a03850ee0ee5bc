"""Crash-safe checkpoints and exact resumption, with the real pretraining config and Runner."""
import multiprocessing
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from mae_mm.engine import build_runner
from mae_mm.engine.checkpoint_files import find_newest_complete_checkpoint
from mae_mm.utils.checkpoint import save_checkpoint_atomic
from mae_mm.utils.compat import load_checkpoint_file
from ..conftest import REPO_ROOT
from .test_reliability_utils import one_intra_op_thread, small_cfg  # noqa: F401

SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
pytestmark = pytest.mark.usefixtures('one_intra_op_thread')


def _assert_same_training_state(expected_path, actual_path):
    """Weights and optimizer state equal bit for bit."""
    expected = load_checkpoint_file(str(expected_path), map_location='cpu')
    actual = load_checkpoint_file(str(actual_path), map_location='cpu')
    assert expected['meta']['iter'] == actual['meta']['iter']
    for key, value in expected['state_dict'].items():
        assert torch.equal(value, actual['state_dict'][key]), key
    for index, state in expected['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(value, actual['optimizer']['state'][index][name]), (index, name)


def _leave_partial_files(work_dir, newest_complete):
    """What interrupted writes leave behind: a temporary file of an atomic write, a truncated
    checkpoint (as a non-atomic writer leaves it) and a pointer naming that truncated file."""
    data = open(newest_complete, 'rb').read()
    (work_dir / 'iter_99.pth').write_bytes(data[:len(data) // 2])
    (work_dir / '.iter_99.pth.0123456789ab.tmp').write_bytes(data[:len(data) // 3])
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_99.pth'))


def test_killed_run_resumes_bit_for_bit(photo_folder, tmp_path):
    """tools/train.py killed with SIGKILL mid-run, then `--resume`: the final weights and
    optimizer state equal those of an uninterrupted run, although auto-resume also finds a
    truncated checkpoint, a partial temporary file and a pointer to the truncated file."""
    cfg = small_cfg(photo_folder, tmp_path / 'unused', max_epochs=4, **{
        # checkpoints inside epochs (iterations 3, 6, 9... of 4-iteration epochs), and the last
        # one; the run is killed at its first, 13 iterations before its end
        'default_hooks.checkpoint': dict(type='CheckpointHook', by_epoch=False, interval=3,
                                         max_keep_ckpts=2)})
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)

    def train(work_dir, *args):
        # output to a file: an unread pipe could fill up and stall the run
        with open(f'{work_dir}.out', 'a') as out:
            return subprocess.Popen([sys.executable, osp.join(REPO_ROOT, 'tools/train.py'),
                                     cfg_path, '--work-dir', str(work_dir), *args],
                                    env=SUBPROCESS_ENV, stdout=out, stderr=subprocess.STDOUT)

    uninterrupted_dir, killed_dir = tmp_path / 'uninterrupted', tmp_path / 'killed'
    uninterrupted = train(uninterrupted_dir)  # runs alongside the killed one
    killed = train(killed_dir)
    deadline = time.time() + 240
    while killed.poll() is None and time.time() < deadline:
        if killed_dir.is_dir() and any(n.startswith('iter_') for n in os.listdir(killed_dir)):
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert killed.wait(timeout=60) == -signal.SIGKILL, 'the run ended before it was killed'
    survivors = sorted(killed_dir.glob('iter_*.pth'), key=lambda p: int(p.stem.split('_')[1]))
    assert survivors and not (killed_dir / 'iter_16.pth').exists()
    _leave_partial_files(killed_dir, survivors[-1])

    resumed = train(killed_dir, '--resume')
    resumed.wait(timeout=240)
    log = open(f'{killed_dir}.out').read()
    assert resumed.returncode == 0, log[-3000:]
    assert "truncated checkpoints moved aside (kept, not resumed from): ['iter_99.pth.incomplete']" \
        in log
    assert "partial files in" in log and "['.iter_99.pth.0123456789ab.tmp']" in log
    assert f'newest complete checkpoint is {survivors[-1]}' in log
    # the truncated file is kept under another name, not overwritten by the resumed run
    assert (killed_dir / 'iter_99.pth.incomplete').stat().st_size > 0
    assert uninterrupted.wait(timeout=240) == 0, open(f'{uninterrupted_dir}.out').read()[-3000:]
    _assert_same_training_state(uninterrupted_dir / 'iter_16.pth', killed_dir / 'iter_16.pth')


def test_resume_from_epoch_checkpoint_skips_a_truncated_newer_one(photo_folder, tmp_path):
    """In-process: auto-resume passes over a truncated newer checkpoint (named by the pointer),
    resumes from the last complete one at an epoch boundary and ends exactly like the
    uninterrupted run. The uninterrupted run asks for max_keep_ckpts=1: mmengine deletes the old
    checkpoint before writing the next, so a crash during that write would leave none; one more
    is kept."""
    uninterrupted = tmp_path / 'uninterrupted'
    build_runner(small_cfg(photo_folder, uninterrupted, max_epochs=2, **{
        'default_hooks.checkpoint.max_keep_ckpts': 1})).train()
    assert sorted(p.name for p in uninterrupted.glob('*.pth')) == ['epoch_1.pth', 'epoch_2.pth']

    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    shutil.copy(uninterrupted / 'epoch_1.pth', resumed_dir)
    data = (uninterrupted / 'epoch_2.pth').read_bytes()
    (resumed_dir / 'epoch_2.pth').write_bytes(data[:len(data) - 100])
    (resumed_dir / 'last_checkpoint').write_text(str(resumed_dir / 'epoch_2.pth'))
    assert find_newest_complete_checkpoint(str(resumed_dir)) == str(resumed_dir / 'epoch_1.pth')

    runner = build_runner(small_cfg(photo_folder, resumed_dir, max_epochs=2, resume=True))
    runner.train()
    assert runner.iter == 8
    _assert_same_training_state(uninterrupted / 'epoch_2.pth', resumed_dir / 'epoch_2.pth')


def test_iteration_based_loop_resumes_exactly(photo_folder, tmp_path):
    """The quick start's loop (IterBasedTrainLoop, InfiniteSampler): mmengine advances the loader,
    the hook re-creates the random state."""
    def cfg(work_dir, **overrides):
        config = small_cfg(photo_folder, work_dir, **overrides, **{
            'train_dataloader.sampler': dict(type='InfiniteSampler', shuffle=True),
            'default_hooks.checkpoint': dict(type='CheckpointHook', by_epoch=False, interval=3),
            'log_processor.by_epoch': False})
        config.train_cfg = dict(type='IterBasedTrainLoop', max_iters=8)
        config.param_scheduler = [dict(type='CosineAnnealingLR', T_max=8, by_epoch=False)]
        return config

    build_runner(cfg(tmp_path / 'uninterrupted')).train()
    (tmp_path / 'resumed').mkdir()
    shutil.copy(tmp_path / 'uninterrupted' / 'iter_3.pth', tmp_path / 'resumed')
    build_runner(cfg(tmp_path / 'resumed', resume=True)).train()
    _assert_same_training_state(tmp_path / 'uninterrupted' / 'iter_8.pth',
                                tmp_path / 'resumed' / 'iter_8.pth')


class _PausesWhilePickled:
    """Holds the pickler (and so the checkpoint write) until the process is killed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        open(self.marker, 'w').close()
        time.sleep(120)
        return (str, ('',))


def _save_slowly(path: str, marker: str) -> None:
    save_checkpoint_atomic({'meta': {'iter': 8, 'epoch': 2}, 'message_hub': {},
                            'state_dict': {'w': torch.full((4, ), 2.0)},
                            'blocker': _PausesWhilePickled(marker)}, path)


def test_checkpoint_write_killed_midway_leaves_previous_checkpoint(tmp_path):
    """A process killed while it writes epoch_2.pth (through the Runner's save function) leaves
    epoch_1.pth loadable, no epoch_2.pth, and auto-resume ignores the partial temporary file."""
    previous = {'meta': {'iter': 4, 'epoch': 1}, 'message_hub': {},
                'state_dict': {'w': torch.ones(4)}}
    save_checkpoint_atomic(previous, str(tmp_path / 'epoch_1.pth'))
    marker = str(tmp_path / 'writing')
    writer = multiprocessing.get_context('fork').Process(
        target=_save_slowly, args=(str(tmp_path / 'epoch_2.pth'), marker))
    writer.start()
    deadline = time.time() + 60
    while not osp.exists(marker) and time.time() < deadline:
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(timeout=60)
    assert writer.exitcode == -signal.SIGKILL

    names = sorted(os.listdir(tmp_path))
    partial = [n for n in names if n.startswith('.epoch_2.pth.') and n.endswith('.tmp')]
    assert len(partial) == 1 and 'epoch_2.pth' not in names, names
    loaded = load_checkpoint_file(str(tmp_path / 'epoch_1.pth'))
    assert torch.equal(loaded['state_dict']['w'], torch.ones(4))
    assert find_newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_1.pth')

    # an atomic write that completes replaces the file as a whole
    save_checkpoint_atomic(dict(previous, meta={'iter': 8, 'epoch': 2}),
                           str(tmp_path / 'epoch_2.pth'))
    assert find_newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / 'epoch_2.pth')
