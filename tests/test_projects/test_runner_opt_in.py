"""mmdet with mae-mm's modules: the ViTDet project's config opts into mae-mm's runner (atomic
checkpoints, newest-complete auto-resume, exact resume); the same config without that line runs
on mmengine's stock Runner with mmengine's own behaviour."""
import os
import os.path as osp
import pickle

import pytest
from mmengine.runner import Runner

from mae_mm.engine import ExactResumeHook, MAERunner
from mae_mm.utils.compat import mmengine_lacks_safe_loading
from .conftest import VITDET_TOY, build_runner, toy_cfg, vitdet_toy_options


def _cfg(checkpoint, work_dir, iters: int, stock: bool = False, resume=False):
    cfg = toy_cfg(VITDET_TOY, {**vitdet_toy_options(checkpoint),
                             'train_cfg.max_iters': iters,
                             'default_hooks.checkpoint.interval': 1}, work_dir)
    cfg.resume = resume
    if stock:
        # A user's own mmdet config that only names mae-mm's modules.
        cfg.pop('runner_type')
        cfg.custom_hooks = []
    return cfg


def test_vitdet_project_runs_on_mae_runner_and_resumes(mae_checkpoint, coco_set, tmp_path):
    runner = build_runner(_cfg(mae_checkpoint, tmp_path, iters=2))
    assert type(runner) is MAERunner
    assert any(isinstance(hook, ExactResumeHook) for hook in runner.hooks)
    runner.train()
    names = sorted(os.listdir(tmp_path))
    assert {'iter_1.pth', 'iter_2.pth'} <= set(names)
    assert not [n for n in names if n.endswith('.tmp')]  # written under temporary names, renamed

    resumed = build_runner(_cfg(mae_checkpoint, tmp_path, iters=3, resume=True))
    resumed.train()
    assert resumed.iter == 3 and osp.isfile(tmp_path / 'iter_3.pth')


def test_vitdet_without_mae_runner_uses_stock_mmengine(mae_checkpoint, coco_set, tmp_path):
    """Stock Runner: trains with mae-mm's backbone, neck and optimizer constructor; resuming is
    mmengine's own: with torch >= 2.6 and an mmengine that lacks the fix it stops with torch's
    safe-loading error (nothing patched it), and resumes with torch's own opt-out."""
    runner = build_runner(_cfg(mae_checkpoint, tmp_path, iters=2, stock=True))
    assert type(runner) is Runner
    runner.train()
    assert osp.isfile(tmp_path / 'iter_2.pth')

    cfg = _cfg(mae_checkpoint, tmp_path, iters=3, stock=True, resume=True)
    if mmengine_lacks_safe_loading():
        with pytest.raises(pickle.UnpicklingError):
            build_runner(cfg).train()
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    try:
        resumed = build_runner(_cfg(mae_checkpoint, tmp_path, iters=3, stock=True,
                                    resume=True))
        resumed.train()
    finally:
        os.environ.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    assert type(resumed) is Runner and resumed.iter == 3
