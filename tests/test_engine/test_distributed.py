"""Distributed correctness on CPU ranks (gloo) through tools/dist_train.sh and the real config."""
import json
import os
import os.path as osp
import random
import shutil
import subprocess
import sys

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mae_mm.engine import build_runner
from mae_mm.registry import HOOKS
from mae_mm.utils.compat import load_checkpoint_file
from ..conftest import REPO_ROOT, tiny_pretrain_cfg
from .test_pretrain_runner import _dist_train, _split_invariant_cfg
from .test_reliability_utils import one_intra_op_thread  # noqa: F401

PORT = 29700 + random.randrange(200)


@HOOKS.register_module(force=True)
class RankProbeHook(Hook):
    """Records, per iteration, which samples this rank trained on and which patches it masked
    (imported into the training processes through ``custom_imports``)."""

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._masks = []
        model.backbone.register_forward_hook(lambda m, args, out: self._masks.append(out[1]))
        self._file = open(osp.join(runner.work_dir, f'probe_rank{runner.rank}.jsonl'), 'w')

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        record = dict(iter=runner.iter, samples=[int(s.sample_idx)
                                                 for s in data_batch['data_samples']],
                      masks=self._masks.pop().int().tolist())
        self._file.write(json.dumps(record) + '\n')
        self._file.flush()


def _next_port() -> int:
    global PORT
    PORT += 1
    return PORT


def _launch(cfg, work_dir, nproc: int, timeout: int) -> subprocess.CompletedProcess:
    """tools/dist_train.sh on ``nproc`` CPU ranks; the result, whatever the exit status."""
    cfg_path = str(work_dir) + '.py'
    cfg.dump(cfg_path)
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_next_port()), OMP_NUM_THREADS='1')
    return subprocess.run(['bash', osp.join(REPO_ROOT, 'tools/dist_train.sh'), cfg_path,
                           str(nproc), '--work-dir', str(work_dir)],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.usefixtures('one_intra_op_thread')
def test_two_and_four_ranks_equal_one_rank(photo_folder, tmp_path):
    """Global batch 8 over 32 photos (4 steps): 2 ranks x 4 and 4 ranks x 2 images end with the
    parameters of 1 rank x 8 images."""

    def cfg(nproc):
        config = _split_invariant_cfg(photo_folder, tmp_path / f'np{nproc}', 8 // nproc)
        config.train_dataloader.dataset.indices = 32
        config.experiment_name = f'{tmp_path.name}_np{nproc}'
        return config

    single = build_runner(cfg(1))
    single.train()
    reference = single.model.state_dict()
    for nproc in (2, 4):
        cfg_path = tmp_path / f'np{nproc}.py'
        cfg(nproc).dump(str(cfg_path))
        _dist_train(cfg_path, nproc, tmp_path / f'np{nproc}', _next_port())
        checkpoint = load_checkpoint_file(str(tmp_path / f'np{nproc}' / 'epoch_1.pth'))
        assert checkpoint['meta']['iter'] == 4
        for key, value in reference.items():
            torch.testing.assert_close(checkpoint['state_dict'][key], value, rtol=1e-5,
                                       atol=1e-6, msg=f'{nproc} ranks, {key}')


@pytest.fixture(scope='module')
def failing_two_rank_run(photo_folder, tmp_path_factory):
    """A 2-rank run with per-rank seeds, a probe of masks and samples, and a corrupt image that
    only rank 1 reads (at its third batch) with ``on_error='raise'``."""
    root = tmp_path_factory.mktemp('ddp_fail')
    folder = root / 'photos'
    folder.mkdir()
    for i in range(16):
        shutil.copy(osp.join(photo_folder, f'img_{i:03d}.jpg'), folder)
    bad = folder / 'img_009.jpg'  # unshuffled, rank 1 reads 1, 3 | 5, 7 | 9, 11 | ...
    bad.write_bytes(b'\xff\xd8 not really a jpeg' * 10)
    work_dir = root / 'work'
    cfg = tiny_pretrain_cfg(str(folder), work_dir, batch_size=2, max_epochs=1, **{
        'train_dataloader.sampler.shuffle': False,
        'train_dataloader.dataset.pipeline.0.on_error': 'raise'})
    cfg.custom_imports = dict(imports=['tests.test_engine.test_distributed'],
                              allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='RankProbeHook')]
    proc = _launch(cfg, work_dir, 2, timeout=240)  # a hang would raise TimeoutExpired
    probes = {}
    for rank in (0, 1):
        with open(work_dir / f'probe_rank{rank}.jsonl') as f:
            probes[rank] = {r['iter']: r for r in map(json.loads, f)}
    return proc, str(bad), probes


def test_each_rank_draws_its_own_masks_and_data(failing_two_rank_run):
    _, _, probes = failing_two_rank_run
    for iteration in (0, 1):  # both ranks trained these before rank 1 failed
        rank0, rank1 = probes[0][iteration], probes[1][iteration]
        assert not set(rank0['samples']) & set(rank1['samples'])
        assert rank0['masks'] != rank1['masks']
    assert probes[0][0]['masks'] != probes[0][1]['masks']


def test_a_dying_rank_takes_the_job_down_with_a_clear_message(failing_two_rank_run):
    proc, bad, _ = failing_two_rank_run
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"OSError: cannot decode image file '{bad}'" in output
    assert "replace or remove the file, or use FastRandomResizedCrop(on_error='skip')" in output
    # torchrun's summary names the rank that failed first; the other was stopped, not left
    # waiting in a collective (gloo reports the lost peer at once)
    assert 'ChildFailedError' in output, output[-3000:]
    assert 'rank      : 1 (local_rank: 1)' in output.split('Root Cause (first observed')[1]
