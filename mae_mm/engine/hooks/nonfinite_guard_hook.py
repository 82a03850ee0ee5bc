"""NonFiniteGuardHook: skip updates with a NaN/Inf loss or gradient norm; stop a diverged run."""
import functools
import os.path as osp
from typing import List, Optional, Tuple

import torch
from mmengine.dist import all_reduce, barrier, is_distributed
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict

from mae_mm.registry import HOOKS


class NonFiniteLossError(RuntimeError):
    """Training stopped by :class:`NonFiniteGuardHook` after too many non-finite updates."""


def _total_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all gradients together (``clip_grad_norm_``'s total norm), on the device."""
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.detach()).float() for g in grads]))


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Protect a long run from NaN/Inf losses and gradients (fp16 overflow, a bad batch).

    Before every optimizer step the hook checks the loss (of every accumulated micro-batch) and
    the total gradient norm. If either is NaN or Inf, on any process, the update is skipped on
    all processes: parameters and optimizer state stay as they were and the gradients are
    cleared, so one bad batch cannot poison the weights. With fp16 dynamic loss scaling
    (mmengine's ``AmpOptimWrapper`` on GPUs) an overflowing step is handed to the ``GradScaler``,
    which skips it as well and lowers the scale; it is counted like any other skip.

    After ``max_consecutive`` skipped updates in a row the run is diverging, not unlucky: the
    hook saves the last good state (the current weights, untouched by the skipped updates) as
    ``iter_<N>_nonfinite_stop.pth`` in the work directory and raises
    :class:`NonFiniteLossError`, one line with the fixes (lower lr, gradient clipping, bf16).
    Auto-resume picks that checkpoint up.

    The check works with any optimizer wrapper: the hook wraps the ``update_params`` and
    ``step`` methods of the runner's wrapper instance(s) at ``before_train``. It costs one
    gradient-norm computation and, in distributed runs, one all-reduce of a flag per update.

    Args:
        max_consecutive (int): Skipped updates in a row that stop the run. Defaults to 10
            (fp16 dynamic loss scaling halves the scale at each overflow: ten in a row means
            a scale 1024 times smaller, far beyond the few skips of its warm-up).
        check_grad_norm (bool): Also check the gradient norm, not only the loss. Defaults to
            True.
        save_checkpoint (bool): Save the last good state before stopping. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, max_consecutive: int = 10, check_grad_norm: bool = True,
                 save_checkpoint: bool = True) -> None:
        if not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f'NonFiniteGuardHook: max_consecutive={max_consecutive!r} must be '
                             'an integer >= 1 (skipped updates in a row that stop the run)')
        self.max_consecutive = max_consecutive
        self.check_grad_norm = check_grad_norm
        self.save_checkpoint = save_checkpoint
        self.consecutive = 0
        self.skipped_total = 0
        self._bad_loss: Optional[torch.Tensor] = None
        self._last_loss: Optional[torch.Tensor] = None
        self._last_values = ''
        self._wrapped: List[Tuple[OptimWrapper, dict]] = []
        self._loaded: Optional[dict] = None
        self._runner = None
        self._stopping = False

    # -------------------------------------------------------------------- wrapping the updates
    def before_train(self, runner) -> None:
        """Wrap the optimizer wrapper(s); restore the counters of a resumed run."""
        self._runner = runner
        if self._loaded and 0 < runner.iter == self._loaded['iter']:
            self.skipped_total = self._loaded['skipped_total']
            self.consecutive = 0 if self._loaded['stopped'] else self._loaded['consecutive']
        wrappers = runner.optim_wrapper
        for wrapper in (wrappers.values() if isinstance(wrappers, OptimWrapperDict)
                        else [wrappers]):
            self._wrap(wrapper)

    def _wrap(self, wrapper: OptimWrapper) -> None:
        update_params, step = wrapper.update_params, wrapper.step
        # mmengine's parameter schedulers already replaced wrapper.step by a counting wrapper
        # (an instance attribute): keep it, to put it back after training.
        self._wrapped.append((wrapper, {name: wrapper.__dict__[name]
                                        for name in ('update_params', 'step')
                                        if name in wrapper.__dict__}))

        @functools.wraps(update_params)
        def guarded_update_params(loss, *args, **kwargs):
            self._note_loss(loss)
            return update_params(loss, *args, **kwargs)  # calls wrapper.step, i.e. guarded_step

        @functools.wraps(step)  # keeps the schedulers' step-counting mark
        def guarded_step(**kwargs):
            bad_loss, bad_grads = self._check_update(wrapper)
            scaler = getattr(wrapper, 'loss_scaler', None)
            if not (bad_loss or bad_grads) or (bad_grads
                                               and isinstance(scaler, torch.amp.GradScaler)):
                # (fp16) the scaler finds the overflow, skips the step and lowers the scale
                return step(**kwargs)
            return None  # skipped; update_params clears the gradients next

        wrapper.update_params, wrapper.step = guarded_update_params, guarded_step

    def after_train(self, runner) -> None:
        """Unwrap; report the skipped updates."""
        for wrapper, originals in self._wrapped:
            del wrapper.update_params, wrapper.step
            wrapper.__dict__.update(originals)
        self._wrapped = []
        if self.skipped_total:
            runner.logger.warning(f'NonFiniteGuardHook: {self.skipped_total} updates with a '
                                  'non-finite loss or gradient norm were skipped in this run')

    def _note_loss(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach()).all()  # stays on the device: no synchronisation
        self._bad_loss = bad if self._bad_loss is None else self._bad_loss | bad
        self._last_loss = loss.detach()

    def _check_update(self, wrapper: OptimWrapper) -> Tuple[bool, bool]:
        """Whether the loss and the gradients of the coming update are non-finite on any
        process; a non-finite update is counted and logged."""
        grads = [p.grad for group in wrapper.optimizer.param_groups for p in group['params']
                 if p.grad is not None]
        norm = (_total_norm(grads) if self.check_grad_norm and grads else None)
        device = grads[0].device if grads else torch.device('cpu')
        flags = torch.zeros(2, dtype=torch.int32, device=device)
        if self._bad_loss is not None:
            flags[0] = self._bad_loss.to(device)
        if norm is not None:
            flags[1] = ~torch.isfinite(norm)
        self._bad_loss = None
        if is_distributed():
            all_reduce(flags, op='max')  # every process takes the same decision
        bad_loss, bad_grads = (bool(v) for v in flags.tolist())
        if not (bad_loss or bad_grads):
            self.consecutive = 0
            return False, False
        self.consecutive += 1
        self.skipped_total += 1
        loss = float(self._last_loss) if self._last_loss is not None else float('nan')
        self._last_values = (f'loss={loss:.4g}, grad_norm='
                             f'{float(norm) if norm is not None else float("nan"):.4g}')
        what = ' and '.join(name for name, bad in (('loss', bad_loss),
                                                   ('gradient norm', bad_grads)) if bad)
        where = ' here or on another process' if is_distributed() else ''
        self._runner.logger.warning(
            f'NonFiniteGuardHook: iteration {self._runner.iter + 1}: non-finite {what}{where} '
            f'({self._last_values}): update skipped ({self.consecutive} in a row, '
            f'{self.skipped_total} in total; the run stops after {self.max_consecutive} in a '
            'row)')
        return bad_loss, bad_grads

    # ------------------------------------------------------------------------------- stopping
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Stop the run after ``max_consecutive`` skipped updates in a row."""
        if self.consecutive < self.max_consecutive:
            return
        path = None
        if self.save_checkpoint:
            filename = f'iter_{runner.iter + 1}_nonfinite_stop.pth'
            self._stopping = True
            runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
            self._stopping = False
            path = osp.join(runner.work_dir, filename)
            barrier()  # no process exits (taking the job down) before the file is written
        saved = (f'the last good weights are saved in {path}' if path else
                 'no checkpoint was saved (save_checkpoint=False)')
        raise NonFiniteLossError(
            f'training stopped at iteration {runner.iter + 1}: {self.consecutive} updates in a '
            f'row had a non-finite loss or gradient norm and were skipped (last: '
            f'{self._last_values}); {saved}. Fix: lower optim_wrapper.optimizer.lr, clip '
            'gradients with optim_wrapper.clip_grad=dict(max_norm=3.0), or train in bf16 '
            'instead of fp16, then resume with --resume'
            + (f' {path}' if path else '')
            + f' (NonFiniteGuardHook.max_consecutive={self.max_consecutive})')

    # ---------------------------------------------------------------------------- checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Save the counters, so that a resumed run goes on counting."""
        checkpoint['nonfinite_guard'] = dict(skipped_total=self.skipped_total,
                                             consecutive=self.consecutive,
                                             stopped=self._stopping)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the counters; ``before_train`` applies them if this is a resumption."""
        state = checkpoint.get('nonfinite_guard') if isinstance(checkpoint, dict) else None
        if state:
            self._loaded = dict(state, iter=checkpoint.get('meta', {}).get('iter'))
