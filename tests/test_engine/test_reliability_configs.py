"""The reliability settings every pretraining recipe has, and checkpoints of other scopes."""
import glob
import os.path as osp
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mae_mm.engine import MAERunner, build_runner
from ..conftest import REPO_ROOT, tiny_pretrain_cfg
from .test_reliability_utils import one_intra_op_thread  # noqa: F401

RECIPES = sorted(
    osp.relpath(p, REPO_ROOT) for pattern in ('configs/*.py', 'configs/mae/*.py',
                                              'configs/ablations/*.py', 'configs/quickstart/*.py')
    for p in glob.glob(osp.join(REPO_ROOT, pattern)))


def test_recipes_found():
    assert len(RECIPES) >= 40, RECIPES


@pytest.mark.parametrize('recipe', RECIPES)
def test_recipe_guards_nonfinite_updates_resumes_exactly_and_takes_clipping(recipe):
    cfg = Config.fromfile(osp.join(REPO_ROOT, recipe))
    assert cfg.model.type == 'MaskedAutoencoder'
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['NonFiniteGuardHook'].get('max_consecutive', 10) >= 1
    assert 'ExactResumeHook' in hooks
    # what `--cfg-options optim_wrapper.clip_grad.max_norm=3.0` does
    cfg.merge_from_dict({'optim_wrapper.clip_grad.max_norm': 3.0})
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=3.0)


class _GradNormProbe(Hook):
    """Measures, independently of the optimizer wrapper, the total gradient norm of every step
    twice: as backward accumulated it (a post-accumulate hook per parameter, before any
    clipping) and as the optimizer applies it (in ``optimizer.step``, after clipping)."""

    def __init__(self):
        self.unclipped, self.applied = [], []
        self._accumulated = {}

    def before_train(self, runner) -> None:
        params = [p for p in runner.model.parameters() if p.requires_grad]
        for param in params:
            param.register_post_accumulate_grad_hook(self._record)
        optimizer = runner.optim_wrapper.optimizer
        step = optimizer.step

        def measured_step(*args, **kwargs):
            grads = [p.grad.detach().float() for p in params if p.grad is not None]
            self.applied.append(float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
            self.unclipped.append(float(sum(self._accumulated.values())) ** 0.5)
            self._accumulated = {}
            return step(*args, **kwargs)

        optimizer.step = measured_step

    def _record(self, param) -> None:
        self._accumulated[id(param)] = float(param.grad.detach().float().pow(2).sum())


@pytest.mark.usefixtures('one_intra_op_thread')
def test_gradient_clipping_by_config_runs_with_the_recipe_wrapper(photo_folder, tmp_path):
    """The recipes' MixedPrecisionOptimWrapper (bf16 on CPU) clips when asked by config: the
    gradient the optimizer applies has total norm max_norm, while the unclipped one was larger."""
    max_norm = 0.01
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path, batch_size=4, max_epochs=1,
                            experiment_name=f'{tmp_path.name}_{time.time_ns()}', **{
                                'train_dataloader.dataset.indices': 8,
                                'optim_wrapper.type': 'MixedPrecisionOptimWrapper',
                                'optim_wrapper.clip_grad.max_norm': max_norm})
    runner = build_runner(cfg)
    probe = _GradNormProbe()
    runner.register_hook(probe)
    runner.train()
    assert len(probe.applied) == len(probe.unclipped) == 2
    for unclipped, applied in zip(probe.unclipped, probe.applied):
        assert unclipped > 10 * max_norm  # so clipping had something to do
        # clip_grad_norm_ scales by max_norm / (norm + 1e-6): the applied norm is max_norm
        assert applied <= max_norm * (1 + 1e-5)
        assert applied == pytest.approx(max_norm, rel=1e-3)
    # The norm the wrapper logs is the unclipped one, as measured here.
    logged = runner.message_hub.get_scalar('train/grad_norm').data[0]
    assert list(logged) == pytest.approx(probe.unclipped, rel=1e-4)


def test_other_scopes_get_a_key_report_not_an_error(tmp_path, capsys):
    """An mmpretrain-scope run with mae-mm's runner (e.g. an mmdet/mmseg/mmpretrain config with
    runner_type='mae_mm.MAERunner') keeps mmengine's partial loading, with the grouped report as
    a warning."""
    model = dict(type='mmpretrain.ImageClassifier',
                 data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor'),
                 backbone=dict(type='mmpretrain.VisionTransformer',
                               arch=dict(embed_dims=64, num_layers=2, num_heads=4,
                                         feedforward_channels=128), img_size=32, patch_size=8))
    source = Runner(model=model, work_dir=str(tmp_path / 'a'), default_scope='mmpretrain',
                    experiment_name=f'{tmp_path.name}_a')
    state = dict(source.model.state_dict())
    state.pop('backbone.ln1.weight')
    state['head.extra.weight'] = torch.zeros(2)
    torch.save({'state_dict': state}, tmp_path / 'partial.pth')
    runner = MAERunner(model=model, work_dir=str(tmp_path / 'b'), default_scope='mmpretrain',
                       load_from=str(tmp_path / 'partial.pth'),
                       experiment_name=f'{tmp_path.name}_b')
    runner.load_or_resume()
    log = capsys.readouterr().out
    assert 'WARNING - checkpoint' in log and 'MISSING in the checkpoint' in log
    assert 'backbone.ln1.weight' in log and 'head.extra.weight' in log
    assert torch.equal(runner.model.state_dict()['backbone.ln1.bias'], state['backbone.ln1.bias'])
