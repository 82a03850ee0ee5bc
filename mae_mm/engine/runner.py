"""mae-mm's runners: mmengine's Runner and FlexibleRunner with crash-safe checkpoints.

A config opts in with one line, ``runner_type = 'mae_mm.MAERunner'`` (mae-mm's configs do, and
an mmdet/mmseg/mmpretrain config can; FSDP recipes: ``'mae_mm.MAEFlexibleRunner'``). The
``mae_mm.`` prefix makes mmengine import mae-mm's registry itself, so any OpenMMLab
``tools/train.py`` builds it. What it adds to mmengine's runner, by overriding the runner's own
methods (nothing in mmengine is changed, so other runs in the process are unaffected):

- **atomic checkpoints**: every local checkpoint is written under a hidden temporary name and
  renamed over the final one (:func:`~mae_mm.engine.checkpoint_files.replace_atomically`);
- **newest-complete auto-resume**: ``resume=True`` takes the newest complete, resumable
  checkpoint in ``work_dir`` whatever ``last_checkpoint`` says; a truncated file is moved aside,
  and a checkpoint that cannot be read safely stops the run with a one-line error instead of
  being overwritten by a fresh start
  (:func:`~mae_mm.engine.checkpoint_files.find_newest_complete_checkpoint`);
- **safe loading on torch >= 2.6** where the installed mmengine lacks it: torch's safe unpickler
  with mmengine's checkpoint types allow-listed (:mod:`mae_mm.utils.compat`);
- **grouped key checks** of ``load_from`` / ``--resume`` checkpoints, an error in mae-mm runs
  (:mod:`~mae_mm.engine.checkpoint_key_check`; :class:`MAERunner` only).

Exact resume (RNG streams, position inside an epoch) is :class:`~mae_mm.engine.ExactResumeHook`,
listed in ``custom_hooks`` of mae-mm's ``default_runtime.py``.
"""
import os.path as osp
from typing import Callable, Optional, Union

from mmengine.dist import is_main_process, master_only
from mmengine.runner import FlexibleRunner, Runner
from mmengine.runner.checkpoint import CheckpointLoader

from mae_mm.registry import RUNNERS
from mae_mm.utils.checkpoint import read_checkpoint
from mae_mm.utils.compat import allow_mmengine_checkpoints, mmengine_lacks_safe_loading
from .checkpoint_files import find_newest_complete_checkpoint, replace_atomically
from .checkpoint_key_check import load_checkpoint_to_model_checked


def _is_local(out_dir: str, file_client_args: Optional[dict],
              backend_args: Optional[dict]) -> bool:
    return '://' not in str(out_dir) and file_client_args is None and not backend_args


def _temporary_name(filename: str) -> str:
    # The same on every rank: with FlexibleRunner strategies, ranks other than the main one may
    # write parts of the checkpoint too.
    return f'.{filename}.tmp'


class _CrashSafeCheckpoints:
    """What both runners share: atomic saving and newest-complete auto-resume."""

    def _save_then_rename(self, save: Callable, out_dir: str, filename: str,
                          file_client_args: Optional[dict], backend_args: Optional[dict],
                          **kwargs) -> None:
        if not _is_local(out_dir, file_client_args, backend_args):
            # Remote back ends (s3://, ...) have no rename: mmengine's writer as it is.
            save(out_dir, filename, file_client_args=file_client_args,
                 backend_args=backend_args, **kwargs)
            return
        tmp = _temporary_name(filename)
        save(out_dir, tmp, file_client_args=None, backend_args=None, **kwargs)
        if is_main_process() and osp.exists(osp.join(out_dir, tmp)):
            replace_atomically(osp.join(out_dir, tmp), osp.join(out_dir, filename))

    def load_or_resume(self) -> None:
        """As mmengine's, but auto-resume (``resume=True`` without ``load_from``) takes the
        newest complete checkpoint (see :func:`find_newest_complete_checkpoint`)."""
        if self._has_loaded:
            return None
        if self._resume is True and self._load_from is None:
            resume_from = find_newest_complete_checkpoint(self.work_dir)
            if resume_from is not None:
                self.resume(resume_from)
                self._has_loaded = True
            return None
        return super().load_or_resume()


@RUNNERS.register_module()
class MAERunner(_CrashSafeCheckpoints, Runner):
    """mmengine's :class:`~mmengine.runner.Runner` with crash-safe checkpoints (module docstring).

    Built like mmengine's runner, from a config with ``runner_type='mae_mm.MAERunner'``
    (``RUNNERS.build(cfg)``, as ``tools/train.py`` does) or ``MAERunner.from_cfg(cfg)``.
    """

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """mmengine's ``save_checkpoint`` (same arguments), atomic for local files."""
        self._save_then_rename(super().save_checkpoint, out_dir, filename, file_client_args,
                               backend_args, save_optimizer=save_optimizer,
                               save_param_scheduler=save_param_scheduler, meta=meta,
                               by_epoch=by_epoch)

    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False, revise_keys: list = [(r'^module.', '')]):
        """mmengine's ``load_checkpoint`` (same arguments; ``resume`` calls it too), reading
        local files safely and checking the keys (see the module docstring)."""
        local = '://' not in str(filename)
        if local and (mmengine_lacks_safe_loading() or osp.isdir(filename)
                      or str(filename).endswith('.safetensors')):
            # Also Hugging Face model folders and safetensors files (with their config.json).
            checkpoint = read_checkpoint(str(filename), map_location=map_location)
        else:
            checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        checkpoint = load_checkpoint_to_model_checked(self.model, checkpoint, str(filename),
                                                      strict=strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint


@RUNNERS.register_module()
class MAEFlexibleRunner(_CrashSafeCheckpoints, FlexibleRunner):
    """mmengine's :class:`~mmengine.runner.FlexibleRunner` (FSDP, DeepSpeed strategies) with
    atomic checkpoints, newest-complete auto-resume and safe loading.

    The strategies load checkpoints themselves, through mmengine; that is done inside
    :func:`~mae_mm.utils.compat.allow_mmengine_checkpoints`, which extends torch's safe
    allow-list for the duration of the call only.
    """

    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """FlexibleRunner's ``save_checkpoint`` (every rank takes part; the strategy writes on
        the main rank), atomic for local files."""
        self._save_then_rename(super().save_checkpoint, out_dir, filename, file_client_args,
                               backend_args, save_optimizer=save_optimizer,
                               save_param_scheduler=save_param_scheduler, meta=meta,
                               by_epoch=by_epoch)

    def resume(self, filename: str, *args, **kwargs) -> None:
        with allow_mmengine_checkpoints():
            return super().resume(filename, *args, **kwargs)

    def load_checkpoint(self, filename: str, *args, **kwargs):
        with allow_mmengine_checkpoints():
            return super().load_checkpoint(filename, *args, **kwargs)


def build_runner(cfg):
    """The runner a config asks for, as OpenMMLab's ``tools/train.py`` builds it.

    ``cfg.runner_type`` (e.g. ``'mae_mm.MAERunner'``) through mmengine's RUNNERS registry;
    mmengine's stock :class:`~mmengine.runner.Runner` when it names none.

    Args:
        cfg (Config): The merged config.

    Returns:
        Runner: The built runner.
    """
    from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
    if 'runner_type' in cfg:
        return MMENGINE_RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
