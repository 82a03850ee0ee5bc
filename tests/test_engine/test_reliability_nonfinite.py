"""NonFiniteGuardHook through the real Runner: NaN/Inf updates are skipped, a diverging run
stops with a checkpoint of its last good state."""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook

from mae_mm.engine import build_runner
from mae_mm.engine.checkpoint_files import find_newest_complete_checkpoint
from mae_mm.engine.hooks.nonfinite_guard_hook import NonFiniteGuardHook, NonFiniteLossError
from mae_mm.utils.compat import load_checkpoint_file
from .test_reliability_utils import one_intra_op_thread, small_cfg  # noqa: F401

pytestmark = pytest.mark.usefixtures('one_intra_op_thread')


def _cfg(photo_folder, work_dir, max_consecutive=3, **overrides):
    """16 photos in batches of 4 (4 iterations per epoch), 2 epochs."""
    cfg = small_cfg(photo_folder, work_dir, **overrides)
    cfg.custom_hooks = [dict(type='NonFiniteGuardHook', max_consecutive=max_consecutive),
                        dict(type='ExactResumeHook')]
    return cfg


class InjectNonFinite(Hook):
    """Make chosen iterations non-finite, the way fp16 overflow does, and record the parameters
    around every iteration.

    ``'loss'`` multiplies the encoder output by NaN (so the loss is NaN); ``'grad'`` leaves the
    loss finite and turns one parameter's gradient into Inf.
    """

    priority = 'LOWEST'  # after ExactResumeHook's re-seeding: does not touch the random stream

    def __init__(self, iterations, kind: str) -> None:
        self.iterations, self.kind = set(iterations), kind
        self.changed = {}
        self._handle = self._before = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model
        self._before = {k: v.clone() for k, v in model.state_dict().items()}
        if runner.iter not in self.iterations:
            return
        if self.kind == 'loss':
            self._handle = model.backbone.register_forward_hook(
                lambda module, args, out: (out[0] * float('nan'), ) + tuple(out[1:]))
        else:
            weight = model.backbone.patch_embed.proj.weight
            self._handle = weight.register_hook(lambda grad: grad * float('inf'))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        after = runner.model.state_dict()
        self.changed[runner.iter] = any(not torch.equal(after[k], v)
                                        for k, v in self._before.items())


def _guard(runner) -> NonFiniteGuardHook:
    return next(h for h in runner.hooks if isinstance(h, NonFiniteGuardHook))


@pytest.mark.parametrize('kind', ['loss', 'grad'])
def test_isolated_nonfinite_update_is_skipped_and_training_goes_on(photo_folder, tmp_path,
                                                                   capsys, kind):
    runner = build_runner(_cfg(photo_folder, tmp_path))
    inject = InjectNonFinite([2, 5], kind)
    runner.register_hook(inject)
    runner.train()
    assert inject.changed == {0: True, 1: True, 2: False, 3: True, 4: True, 5: False, 6: True,
                              7: True}
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    guard = _guard(runner)
    assert (guard.skipped_total, guard.consecutive) == (2, 0)
    log = capsys.readouterr().out
    what = 'loss' if kind == 'loss' else 'gradient norm'
    assert f'iteration 3: non-finite {what}' in log and f'iteration 6: non-finite {what}' in log
    assert 'update skipped (1 in a row, 2 in total; the run stops after 3 in a row)' in log
    assert '2 updates with a non-finite loss or gradient norm were skipped' in log
    # the wrapper is restored after training, with mmengine's step counter
    assert 'update_params' not in vars(runner.optim_wrapper)
    assert getattr(runner.optim_wrapper.step, '_with_counter', False)


def test_diverging_run_stops_with_checkpoint_of_last_good_state(photo_folder, tmp_path):
    runner = build_runner(_cfg(photo_folder, tmp_path))
    inject = InjectNonFinite(range(2, 8), 'loss')  # NaN from the third iteration on
    weights_after_two = {}

    class Snapshot(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter == 1:
                weights_after_two.update((k, v.clone())
                                         for k, v in runner.model.state_dict().items())

    runner.register_hook(inject)
    runner.register_hook(Snapshot())
    with pytest.raises(NonFiniteLossError) as error:
        runner.train()
    message = str(error.value)
    path = osp.join(str(tmp_path), 'iter_5_nonfinite_stop.pth')
    assert '\n' not in message
    assert message.startswith('training stopped at iteration 5: 3 updates in a row had a '
                              'non-finite loss or gradient norm and were skipped (last: loss=nan')
    for fix in (f'the last good weights are saved in {path}', 'lower optim_wrapper.optimizer.lr',
                'optim_wrapper.clip_grad=dict(max_norm=3.0)', 'bf16', f'--resume {path}',
                'NonFiniteGuardHook.max_consecutive=3'):
        assert fix in message, fix
    assert inject.changed == {0: True, 1: True, 2: False, 3: False}  # the stop comes first at 4

    saved = load_checkpoint_file(path)
    assert saved['meta']['iter'] == 5 and saved['nonfinite_guard']['stopped']
    for key, value in weights_after_two.items():
        assert torch.equal(saved['state_dict'][key], value), key
    assert find_newest_complete_checkpoint(str(tmp_path)) == path

    # Resuming (after fixing the cause) continues from there, in the middle of epoch 2.
    resumed = build_runner(_cfg(photo_folder, tmp_path, resume=True))
    resumed.train()
    assert resumed.iter == 8 and (_guard(resumed).skipped_total, _guard(resumed).consecutive) \
        == (3, 0)


def test_overflow_with_dynamic_loss_scaling_lowers_the_scale(photo_folder, tmp_path):
    """fp16-style dynamic loss scaling (mmengine's AmpOptimWrapper code path with a real
    GradScaler, on CPU): an Inf gradient goes to the scaler, which skips the step and halves the
    scale; the guard counts it."""
    cfg = _cfg(photo_folder, tmp_path, max_epochs=1, **{
        'optim_wrapper.type': 'MixedPrecisionOptimWrapper'})
    runner = build_runner(cfg)
    scales = []

    class UseGradScaler(Hook):
        priority = 'HIGHEST'

        def before_train(self, runner):
            runner.optim_wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=2.0**10)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            scales.append(runner.optim_wrapper.loss_scaler.get_scale())

    inject = InjectNonFinite([1], 'grad')
    runner.register_hook(UseGradScaler())
    runner.register_hook(inject)
    runner.train()
    assert inject.changed == {0: True, 1: False, 2: True, 3: True}
    assert scales == [2.0**10, 2.0**9, 2.0**9, 2.0**9]
    assert _guard(runner).skipped_total == 1


def test_max_consecutive_must_be_positive():
    with pytest.raises(ValueError, match=r'max_consecutive=0 must be an integer >= 1'):
        NonFiniteGuardHook(max_consecutive=0)
