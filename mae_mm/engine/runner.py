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
  (:mod:`~mae_mm.engine.checkpoint_key_check`; :class:`MAERunner` only);
- **configs inherited across packages**: ``_scope_`` keys that mmengine's config inheritance adds
  to ``collate_fn`` / ``worker_init_fn`` (e.g. a config whose ``_base_`` is
  ``mmpretrain::mae/...``) are resolved instead of being passed to the function
  (:func:`resolve_scoped_functions`);
- **start-up checks**: a training set that yields no batch (fewer samples than
  ``train_dataloader.batch_size`` with ``drop_last=True``) is a one-line error before training,
  and a pretraining crop size that differs from ``model.backbone.img_size`` a warning
  (:func:`crop_size_note`).

Exact resume (RNG streams, position inside an epoch) is :class:`~mae_mm.engine.ExactResumeHook`,
listed in ``custom_hooks`` of mae-mm's ``default_runtime.py``.
"""
import copy
import os.path as osp
from typing import Callable, Optional, Sequence, Tuple, Union

from mmengine.dist import is_main_process, master_only
from mmengine.logging import MMLogger
from mmengine.registry import FUNCTIONS
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


#: Dataloader entries that mmengine's ``Runner.build_dataloader`` resolves with ``FUNCTIONS.get``
#: (not ``build``), so that a ``_scope_`` key in them reaches the function as an argument.
FUNCTION_ENTRIES = ('collate_fn', 'worker_init_fn')


def resolve_scoped_functions(dataloader_cfg):
    """A copy of a dataloader config whose ``collate_fn`` / ``worker_init_fn`` carry no ``_scope_``.

    When a config inherits another package's (``_base_ = 'mmpretrain::mae/...'``), mmengine adds
    ``_scope_='mmpretrain'`` to every dict with a ``type``. Registries' ``build`` understands it,
    but mmengine 0.10.7's ``Runner.build_dataloader`` looks these two functions up by name and
    passes the rest of the dict, ``_scope_`` included, to them (``TypeError: default_collate()
    got an unexpected keyword argument '_scope_'``). Here the name is looked up in that scope's
    ``FUNCTIONS`` registry and written as the function's import path when the runner's own
    look-up would not find the same function, so the config can still be dumped.

    Args:
        dataloader_cfg: A dataloader config (dict), or anything else (returned as it is).

    Returns:
        The config, copied if anything was changed.
    """
    if not isinstance(dataloader_cfg, dict) or not any(
            isinstance(dataloader_cfg.get(k), dict) and '_scope_' in dataloader_cfg[k]
            for k in FUNCTION_ENTRIES):
        return dataloader_cfg
    dataloader_cfg = copy.copy(dataloader_cfg)
    for key in FUNCTION_ENTRIES:
        entry = dataloader_cfg.get(key)
        if not isinstance(entry, dict) or '_scope_' not in entry:
            continue
        entry = copy.copy(entry)
        scope = entry.pop('_scope_')
        name = entry.get('type')
        if isinstance(name, str):
            with FUNCTIONS.switch_scope_and_registry(scope) as registry:
                function = registry.get(name)
            if function is None:
                raise KeyError(f'{key}.type={name!r} is not a function registered in scope '
                               f'{scope!r}: check the name (e.g. default_collate)')
            try:
                same = FUNCTIONS.get(name) is function
            except Exception:  # mmengine raises when a dotted name cannot be imported
                same = False
            if not same:
                entry['type'] = f'{function.__module__}.{function.__qualname__}'
        dataloader_cfg[key] = entry
    return dataloader_cfg


def _iter_pipeline(dataset_cfg) -> Sequence[dict]:
    """The ``pipeline`` of a dataset config, looking through wrappers (``dataset=...``)."""
    while isinstance(dataset_cfg, dict):
        if isinstance(dataset_cfg.get('pipeline'), (list, tuple)):
            return dataset_cfg['pipeline']
        dataset_cfg = dataset_cfg.get('dataset')
    return ()


def _pair(value) -> Optional[Tuple[int, int]]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return tuple(value)
    return None


def crop_size_note(cfg) -> Optional[str]:
    """One line when a pretraining config crops to another size than ``model.backbone.img_size``.

    MAE then trains on a grid its position table was not built for: the table is resampled at
    every step, and the checkpoint's table is not the one of the training images. Looks at the
    last ``*Crop`` transform with a ``scale`` or ``crop_size`` in the training pipeline of a
    ``MaskedAutoencoder`` config.

    Args:
        cfg (Config | dict): The runner's config.

    Returns:
        str | None: The warning (naming both fields and the fix), or None when they agree or the
        config is not a MAE pretraining config.
    """
    model = cfg.get('model')
    if not isinstance(model, dict) or not str(model.get('type', '')).endswith(
            'MaskedAutoencoder'):
        return None
    backbone = model.get('backbone') or {}
    img_size = _pair(backbone.get('img_size', 224))
    loader = cfg.get('train_dataloader')
    if img_size is None or not isinstance(loader, dict):
        return None
    found = None
    for index, transform in enumerate(_iter_pipeline(loader.get('dataset'))):
        if not isinstance(transform, dict) or 'Crop' not in str(transform.get('type', '')):
            continue
        for field in ('scale', 'crop_size'):
            if _pair(transform.get(field)) is not None:
                found = (f'train_dataloader.dataset.pipeline.{index}.{field}',
                         transform[field], _pair(transform[field]))
    if found is None or found[2] == img_size:
        return None
    field, value, _ = found
    return (f'the training crop {field}={value!r} differs from model.backbone.img_size='
            f'{backbone.get("img_size", 224)!r}: the position table is resampled at every step; '
            'set both to the same size')


class _CrashSafeCheckpoints:
    """What both runners share: atomic saving, newest-complete auto-resume, dataloaders of
    configs inherited across packages and the start-up checks."""

    def build_train_loop(self, loop):
        """mmengine's, then a one-line error when the training dataloader yields no batch."""
        loop = super().build_train_loop(loop)
        check_train_dataloader_not_empty(getattr(loop, 'dataloader', None))
        return loop

    def train(self):
        """mmengine's ``train``, after a warning when the crop size and ``img_size`` differ."""
        note = crop_size_note(self.cfg)
        if note:
            MMLogger.get_current_instance().warning(note)
        return super().train()

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

    @staticmethod
    def build_dataloader(dataloader, seed: Optional[int] = None, diff_rank_seed: bool = False):
        """mmengine's ``build_dataloader`` (a staticmethod there too; same arguments), with
        ``_scope_`` keys of ``collate_fn`` / ``worker_init_fn`` resolved
        (:func:`resolve_scoped_functions`)."""
        return Runner.build_dataloader(resolve_scoped_functions(dataloader), seed=seed,
                                       diff_rank_seed=diff_rank_seed)

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

    @staticmethod
    def build_dataloader(dataloader, seed: Optional[int] = None, diff_rank_seed: bool = False):
        """FlexibleRunner's ``build_dataloader`` with ``_scope_`` keys of ``collate_fn`` /
        ``worker_init_fn`` resolved (:func:`resolve_scoped_functions`)."""
        return FlexibleRunner.build_dataloader(resolve_scoped_functions(dataloader), seed=seed,
                                               diff_rank_seed=diff_rank_seed)

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


def check_train_dataloader_not_empty(dataloader) -> None:
    """Raise when a finite training dataloader has no batch (the dataset is smaller than one
    batch and ``drop_last=True``): mmengine would fail later with ``epoch_length must be a
    positive integer, but got 0``, or train on nothing.

    Args:
        dataloader: The built training dataloader (anything without a length is accepted).

    Raises:
        ValueError: One line naming ``train_dataloader.batch_size``, the dataset size and the fix.
    """
    from torch.utils.data import DataLoader
    if not isinstance(dataloader, DataLoader):
        return
    sampler = dataloader.batch_sampler.sampler if dataloader.batch_sampler is not None \
        else dataloader.sampler
    if 'Infinite' in type(sampler).__name__:
        return  # batches are drawn from an endless stream of indices: never empty
    try:
        num_batches, size = len(dataloader), len(dataloader.dataset)
    except TypeError:  # iterable datasets have no length
        return
    if num_batches or not size:
        return
    batch_size = dataloader.batch_size or getattr(dataloader.batch_sampler, 'batch_size', None)
    raise ValueError(
        f'the training set has {size} samples, fewer than train_dataloader.batch_size='
        f'{batch_size} with drop_last=True, so an epoch has no batch: set '
        f'train_dataloader.batch_size to at most {size}, or train_dataloader.drop_last=False')


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
