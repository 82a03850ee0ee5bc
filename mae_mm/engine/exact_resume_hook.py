"""ExactResumeHook: a resumed run continues bit for bit where the interrupted one stopped."""
import functools
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from torch.utils.data import DataLoader

from mae_mm.registry import HOOKS
from .resumable_batch_sampler import ResumableBatchSampler

#: Independent random streams: the data pipeline's and the model's (masks).
DATA_STREAM, MODEL_STREAM = 0, 1


def reseed_global_rngs(*key: int) -> None:
    """Seed torch (every device), numpy and python ``random`` from a tuple of integers.

    ``numpy.random.SeedSequence`` turns the tuple into well-mixed seeds, so that neighbouring keys
    (consecutive iterations, ranks) give unrelated streams.
    """
    words = np.random.SeedSequence([int(k) % 2**63 for k in key]).generate_state(4)
    torch.manual_seed((int(words[0]) << 32) | int(words[1]))
    np.random.seed(int(words[2]))
    random.seed(int(words[3]))


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make ``--resume`` reproduce the uninterrupted run exactly.

    mmengine restores the weights, the optimizer (with the AMP loss scale), the parameter
    schedulers, the message hub, the epoch/iteration counters and the seed. This hook adds:

    1. **Random state.** The global generators (torch on every device, numpy, ``random``) are
       re-seeded from ``(seed, stream, iteration)``: before each batch is loaded (random crops and
       flips of the data pipeline) and before each iteration's forward pass (masks). The random
       state at any moment is thus a function of the seed (per rank with
       ``randomness.diff_rank_seed=True``) and the position in training alone: it is what an
       interrupted run would have to save, for every rank, at every moment it may be killed, and
       a resumed run re-creates it exactly. Random numbers drawn elsewhere (validation,
       visualisation hooks) cannot shift the training stream either.
    2. **Data position.** With ``EpochBasedTrainLoop``, a checkpoint written inside an epoch
       (by-iteration checkpoints, :class:`NonFiniteGuardHook`'s stop checkpoint) resumes with the
       next batch of that epoch, where mmengine would restart the epoch and train on its first
       batches twice. The trained batches are skipped as index lists, without loading images.
       (``IterBasedTrainLoop`` advances its loader itself.)
    3. **A complete checkpoint survives a crash during a write.** mmengine deletes the oldest
       checkpoint *before* it writes the next, so ``max_keep_ckpts=1`` is raised to 2.

    Each checkpoint gets a ``resume_state`` entry (epoch, iteration, batches per epoch, world
    size) that tells a resumption with another batch size or number of processes.

    Limit: data-loader worker processes (``num_workers > 0``) draw augmentation randomness from
    their own generators, which mmengine seeds when they start. After a resume, an epoch-based run
    therefore crops and flips the rest of the interrupted epoch differently from the
    uninterrupted run (and every later epoch too with ``persistent_workers=True``); data order and
    masks do not differ. An iteration-based run matches: mmengine advances its loader by loading
    the batches already trained, so the workers repeat their draws. Bit-for-bit equality of an
    epoch-based run therefore needs ``num_workers=0`` (and, on GPUs, deterministic kernels).
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._loaded: Optional[dict] = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep what the checkpoint says about its data position."""
        if not isinstance(checkpoint, dict):
            return  # not a checkpoint: the loader reports it
        self._loaded = dict(iter=checkpoint.get('meta', {}).get('iter'),
                            resume_state=checkpoint.get('resume_state') or {})

    def _resumed(self, runner) -> bool:
        """A resumption (the loop continues from the loaded iteration), not a ``load_from``."""
        return self._loaded is not None and 0 < runner.iter == self._loaded['iter']

    def _reseed(self, runner, stream: int, position: int) -> None:
        reseed_global_rngs(runner.seed, stream, position)

    def before_train(self, runner) -> None:
        """Wrap the training loader's batch sampler; find where a resumed epoch continues."""
        self._keep_a_complete_checkpoint(runner)
        loop, loader = runner.train_loop, runner.train_dataloader
        if (not isinstance(loop, (EpochBasedTrainLoop, IterBasedTrainLoop))
                or not isinstance(loader, DataLoader) or loader.batch_sampler is None):
            runner.logger.warning(
                'ExactResumeHook: the data pipeline is not re-seeded and a resumption does not '
                'continue inside an epoch (both need mmengine\'s EpochBasedTrainLoop or '
                'IterBasedTrainLoop and a DataLoader with a batch size)')
            return
        if isinstance(loop, IterBasedTrainLoop) and loader.num_workers > 0:
            # mmengine advances this loop's loader itself when resuming, and the workers draw
            # the augmentation randomness (see the class note); its iterator, with the workers,
            # already exists and keeps the batch sampler it was made with.
            return
        skip = 0
        if isinstance(loop, EpochBasedTrainLoop):
            skip = self._batches_done_in_epoch(runner, len(loader))
        sampler = ResumableBatchSampler(
            loader.batch_sampler, functools.partial(self._reseed, runner, DATA_STREAM),
            start_position=runner.iter - skip if isinstance(loop, EpochBasedTrainLoop) else 0)
        sampler.skip_next = skip
        # DataLoader refuses a new batch_sampler once built, to protect running iterators. None
        # is in use here, and every iterator made from now on reads the attribute afresh.
        object.__setattr__(loader, 'batch_sampler', sampler)
        if isinstance(loop, IterBasedTrainLoop):
            # mmengine built this loop's endless iterator over the unwrapped batch sampler
            # (without workers: nothing to shut down).
            loop.dataloader_iterator = type(loop.dataloader_iterator)(loader)

    def _batches_done_in_epoch(self, runner, batches_per_epoch: int) -> int:
        if not self._resumed(runner):
            return 0
        done = runner.iter - runner.epoch * batches_per_epoch
        saved = self._loaded['resume_state'].get('batches_per_epoch', batches_per_epoch)
        if saved != batches_per_epoch or not 0 <= done <= batches_per_epoch:
            runner.logger.warning(
                f'ExactResumeHook: the checkpoint was written with {saved} batches per epoch, '
                f'this run has {batches_per_epoch} (another batch size, number of processes or '
                f'data set): epoch {runner.epoch + 1} restarts from its first batch')
            return 0
        if done:
            runner.logger.info(
                f'resuming inside epoch {runner.epoch + 1}: its first {done} of '
                f'{batches_per_epoch} batches were trained on before the interruption and are '
                'skipped without loading them')
        return done

    @staticmethod
    def _keep_a_complete_checkpoint(runner) -> None:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and hook.max_keep_ckpts == 1:
                hook.max_keep_ckpts = 2
                runner.logger.warning(
                    'CheckpointHook.max_keep_ckpts=1 raised to 2: mmengine deletes the previous '
                    'checkpoint before it writes the next one, and a crash during that write '
                    'would leave no checkpoint to resume from')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Re-seed the model's random stream (masks) from the iteration."""
        self._reseed(runner, MODEL_STREAM, runner.iter)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Record the data position, to check it on resumption."""
        meta = checkpoint.get('meta', {})
        by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
        checkpoint['resume_state'] = dict(
            epoch=meta.get('epoch'), iter=meta.get('iter'),
            batches_per_epoch=len(runner.train_dataloader) if by_epoch else None,
            world_size=get_world_size(),
            random_state='re-seeded from (seed, stream, iteration) by ExactResumeHook')
