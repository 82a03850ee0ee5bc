"""The real pretraining config through the real mmengine Runner, on real photos."""
import json
import os
import os.path as osp
import subprocess
import sys

import torch
from mmengine.runner import Runner

from ..conftest import REPO_ROOT, tiny_pretrain_cfg


def _losses(work_dir):
    """The per-iteration training losses that mmengine logged as JSON."""
    logs = sorted(
        osp.join(root, f) for root, _, files in os.walk(work_dir) for f in files
        if f.endswith('.json') and 'vis_data' in root and f != 'scalars.json')
    with open(logs[-1]) as f:
        return [json.loads(line)['loss'] for line in f if '"loss"' in line]


def test_runner_training_lowers_the_loss(photo_folder, tmp_path):
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path, max_epochs=6)
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = _losses(tmp_path)
    assert len(losses) == 6 * 64 // 8
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.9 * first, (first, last)
    assert osp.isfile(osp.join(tmp_path, 'epoch_6.pth'))


def _write_cfg(cfg, path):
    cfg.dump(str(path))
    return str(path)


def test_two_processes_equal_one_process(photo_folder, tmp_path):
    """tools/dist_train.sh with 2 CPU ranks x 4 images == 1 rank x 8 images, step for step."""
    results = {}
    for nproc in (1, 2):
        work_dir = tmp_path / f'np{nproc}'
        cfg = tiny_pretrain_cfg(photo_folder, work_dir, batch_size=8 // nproc, max_epochs=1,
                                **{'model.mask_seed': 3})
        # Deterministic pixels: no random crop or flip, so that only the split differs.
        cfg.train_dataloader.dataset.pipeline = [
            dict(type='LoadImageSafe'),
            dict(type='mmpretrain.Resize', scale=(32, 32)),
            dict(type='mmpretrain.PackInputs')
        ]
        cfg.randomness = dict(seed=0, diff_rank_seed=False)
        # SGD: Adam divides by sqrt(v), which turns float rounding of near-zero gradients into
        # visible parameter differences; SGD keeps the comparison tight.
        cfg.optim_wrapper.optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0)
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
        cfg_path = _write_cfg(cfg, tmp_path / f'cfg{nproc}.py')
        env = dict(os.environ, PYTHON=sys.executable, PORT=str(29600 + nproc),
                   OMP_NUM_THREADS='1')
        proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools/dist_train.sh'), cfg_path,
                               str(nproc), '--work-dir', str(work_dir)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        state = torch.load(work_dir / 'epoch_1.pth', map_location='cpu',
                           weights_only=False)['state_dict']
        results[nproc] = (_losses(work_dir), state)
    (loss1, state1), (loss2, state2) = results[1], results[2]
    assert len(loss1) == len(loss2) == 8
    assert all(abs(a - b) < 1e-5 * max(1.0, abs(a)) for a, b in zip(loss1, loss2)), (loss1, loss2)
    for key in state1:
        torch.testing.assert_close(state1[key], state2[key], rtol=1e-5, atol=1e-6, msg=key)
