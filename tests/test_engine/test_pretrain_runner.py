"""The real pretraining config through the real mmengine Runner, on real photos."""
import json
import os
import os.path as osp
import subprocess
import sys

import torch

from mae_mm.engine import build_runner
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
    runner = build_runner(cfg)
    runner.train()
    losses = _losses(tmp_path)
    assert len(losses) == 6 * 64 // 8
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.9 * first, (first, last)
    assert osp.isfile(osp.join(tmp_path, 'epoch_6.pth'))


def _dist_train(cfg_path, nproc, work_dir, port, *extra):
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(port), OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools/dist_train.sh'), str(cfg_path),
                           str(nproc), '--work-dir', str(work_dir), *extra],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _split_invariant_cfg(photo_folder, work_dir, batch_size, config=None):
    """A run whose numbers do not depend on how the global batch is split over processes:
    masks seeded per sample (model.mask_seed), no random augmentation, SGD (Adam divides by
    sqrt(v), which turns float rounding of near-zero gradients into visible differences)."""
    kwargs = dict(config=config) if config else {}
    cfg = tiny_pretrain_cfg(photo_folder, work_dir, batch_size=batch_size, max_epochs=1,
                            **{'model.mask_seed': 3}, **kwargs)
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageSafe'),
        dict(type='mmpretrain.Resize', scale=(32, 32)),
        dict(type='mmpretrain.PackInputs')
    ]
    cfg.randomness = dict(seed=0, diff_rank_seed=False)
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    return cfg


def _assert_same_run(run_a, run_b):
    (loss_a, state_a), (loss_b, state_b) = run_a, run_b
    assert len(loss_a) == len(loss_b) == 8
    assert all(abs(a - b) < 1e-5 * max(1.0, abs(a)) for a, b in zip(loss_a, loss_b)), \
        (loss_a, loss_b)
    assert set(state_a) == set(state_b)
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=1e-5, atol=1e-6, msg=key)


def _result(work_dir):
    state = torch.load(work_dir / 'epoch_1.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    return _losses(work_dir), state


def test_two_processes_equal_one_process(photo_folder, tmp_path):
    """tools/dist_train.sh with 2 CPU ranks x 4 images == 1 rank x 8 images, step for step."""
    results = {}
    for nproc in (1, 2):
        work_dir = tmp_path / f'np{nproc}'
        cfg = _split_invariant_cfg(photo_folder, work_dir, 8 // nproc)
        cfg.dump(str(tmp_path / f'cfg{nproc}.py'))
        _dist_train(tmp_path / f'cfg{nproc}.py', nproc, work_dir, 29600 + nproc)
        results[nproc] = _result(work_dir)
    _assert_same_run(results[1], results[2])


def test_fsdp_on_two_cpu_ranks_equals_one_process(photo_folder, tmp_path):
    """The sharded ViT-H recipe (FlexibleRunner + FSDPStrategy), shrunk, on 2 gloo ranks."""
    config = 'configs/mae/mae_vit-huge-p14_8xb512-fsdp-coslr-1600e_in1k.py'
    runs = {}
    for name, nproc in (('fsdp', 2), ('single', 1)):
        cfg = _split_invariant_cfg(photo_folder, tmp_path / name, 8 // nproc, config)
        cfg.optim_wrapper.pop('use_fsdp', None)  # plain OptimWrapper in this shrunk run
        if nproc == 1:  # the reference: an ordinary single-process Runner
            cfg.pop('runner_type')
            cfg.pop('strategy')
        else:  # shard at every Transformer block of the tiny model
            cfg.strategy.model_wrapper.auto_wrap_policy.min_num_params = 1000
        cfg.dump(str(tmp_path / f'{name}.py'))
        _dist_train(tmp_path / f'{name}.py', nproc, tmp_path / name, 29610 + nproc)
        runs[name] = _result(tmp_path / name)
    _assert_same_run(runs['single'], runs['fsdp'])


def test_headline_command_starts_8_ranks(photo_folder, tmp_path):
    """`tools/dist_train.sh configs/mae_vit-l_1600e.py 8`, pointed at a small folder and shrunk
    from the command line only (the ViT-L weights x 8 ranks would not fit this machine)."""
    proc = _dist_train(
        osp.join(REPO_ROOT, 'configs/mae_vit-l_1600e.py'), 8, tmp_path, 29620,
        '--cfg-options', f'train_dataloader.dataset.data_root={photo_folder}',
        'train_dataloader.dataset.data_prefix=', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'model.backbone.arch=s', 'model.backbone.img_size=64', 'model.neck.decoder_depth=1',
        'model.neck.decoder_embed_dim=64', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.pipeline.0.scale=64', 'default_hooks.logger.interval=1')
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'GPU number: 8' in log  # mmengine's words
    losses = _losses(tmp_path)
    assert len(losses) == 64 // (8 * 2) and all(l == l for l in losses)  # 4 steps, finite
    assert osp.isfile(osp.join(tmp_path, 'epoch_1.pth'))


def test_runner_trains_a_compiled_model_with_bf16_autocast(photo_folder, tmp_path):
    """``model.compile=True`` (inductor) with the config's bf16 AMP wrapper through the real
    Runner: the compiled step trains, logs finite losses and checkpoints, which mmengine's own
    ``compile=True`` cannot (it traces the optimizer step)."""
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path, max_epochs=1, **{
        'model.compile': True, 'train_dataloader.dataset.indices': 32,
        'optim_wrapper.type': 'MixedPrecisionOptimWrapper'})
    runner = build_runner(cfg)
    runner.train()
    losses = _losses(tmp_path)
    assert len(losses) == 4 and all(0 < v < 10 for v in losses)
    assert runner.model._compiled_forward_loss is not None
    assert osp.isfile(osp.join(tmp_path, 'epoch_1.pth'))
