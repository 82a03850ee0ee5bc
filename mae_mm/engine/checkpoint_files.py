"""Crash-safe checkpoint files for mmengine's Runner: atomic writes, newest *complete* checkpoint.

mmengine 0.10.7 writes a checkpoint in place (``open(path, 'wb')``), so a process killed during
the write leaves a truncated file under the final name; ``last_checkpoint`` (the pointer that
auto-resume follows) is also rewritten in place, and may name that truncated file or be empty.
``resume=True`` then fails on restart, losing a multi-day run.

:func:`install` (called by :func:`mae_mm.utils.compat.apply_compat_patches`) replaces the two
functions that ``Runner`` and ``FlexibleRunner`` use:

- ``save_checkpoint``: local files go through :func:`mae_mm.utils.checkpoint.save_checkpoint_atomic`
  (temporary file in the same folder, fsync, ``os.replace``): a reader sees the old file or the
  complete new one, never a partial one. Remote back ends (``s3://``, ``pavi://``...) keep
  mmengine's writer.
- ``find_latest_checkpoint`` (auto-resume): the newest checkpoint that is complete and resumable,
  whatever ``last_checkpoint`` says: partial files (hidden ``*.tmp`` files of interrupted atomic
  writes, truncated files written by other tools) are skipped with a log line naming them.
"""
import logging
import os
import os.path as osp
import zipfile
from typing import List, Optional, Tuple

from mmengine.logging import print_log

from mae_mm.utils.checkpoint import save_checkpoint_atomic
from mae_mm.utils.compat import CheckpointLoadError, load_checkpoint_file

POINTER_FILE = 'last_checkpoint'
_mmengine_save_checkpoint = None


def save_checkpoint_atomically(checkpoint: dict, filename: str, file_client_args=None,
                               backend_args=None) -> None:
    """mmengine's ``save_checkpoint`` with an atomic write for local files (same arguments)."""
    is_local = '://' not in str(filename)
    if is_local and file_client_args is None and not backend_args:
        save_checkpoint_atomic(checkpoint, filename)
        return
    _mmengine_save_checkpoint(checkpoint, filename, file_client_args=file_client_args,
                              backend_args=backend_args)


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a whole torch zip archive (a truncated one has no central directory).

    Cheap: reads the archive's directory at the end of the file, not the tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('/data.pkl') or name == 'data.pkl'
                       for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _progress(path: str) -> Optional[Tuple[int, int]]:
    """``(iter, epoch)`` of a resumable mmengine checkpoint, None if it is not one.

    Memory-maps the file, so only the pickled structure is read, not the tensors.
    """
    try:
        checkpoint = load_checkpoint_file(path, map_location='cpu', mmap=True)
    except (CheckpointLoadError, OSError, RuntimeError):
        return None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or 'iter' not in meta or 'message_hub' not in checkpoint:
        return None  # weights only (e.g. a published or converted model): nothing to resume
    return int(meta['iter']), int(meta.get('epoch', 0))


def _candidates(work_dir: str) -> List[str]:
    """``*.pth`` files of ``work_dir`` and of the folder ``last_checkpoint`` points into."""
    folders = [work_dir]
    pointer = osp.join(work_dir, POINTER_FILE)
    if osp.isfile(pointer):
        with open(pointer) as f:
            target = f.read().strip()
        if target and '://' not in target and osp.dirname(target):
            folders.append(osp.dirname(target))
    found = []
    for folder in dict.fromkeys(osp.abspath(f) for f in folders):
        if osp.isdir(folder):
            found += [osp.join(folder, name) for name in sorted(os.listdir(folder))
                      if name.endswith('.pth') and not name.startswith('.')]
    return found


def find_newest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The resumable checkpoint with the most training iterations in ``work_dir``.

    Drop-in for mmengine's ``find_latest_checkpoint``: instead of trusting ``last_checkpoint``,
    every ``*.pth`` file (and the folder that pointer names, for ``CheckpointHook(out_dir=...)``)
    is checked; truncated, non-checkpoint and weights-only files are skipped. Ties (same
    iteration) go to the most recently written file.

    Args:
        work_dir (str): The run's work directory.

    Returns:
        str | None: Path of the checkpoint to resume from, or None (start from scratch).
    """
    ranked, skipped = [], []
    for path in _candidates(work_dir):
        progress = _progress(path) if is_complete_checkpoint(path) else None
        if progress is None:
            skipped.append(osp.basename(path))
        else:
            ranked.append((progress, osp.getmtime(path), path))
    partial = [name for name in (os.listdir(work_dir) if osp.isdir(work_dir) else [])
               if name.startswith('.') and name.endswith('.tmp')]
    if skipped or partial:
        print_log(f'auto-resume ignores incomplete or non-resumable files in {work_dir}: '
                  f'{sorted(skipped + partial)}', logger='current',
                  level=logging.WARNING)
    if not ranked:
        print_log(f'auto-resume: no complete checkpoint in {work_dir}; training starts from '
                  'scratch', logger='current')
        return None
    (iteration, epoch), _, path = max(ranked)
    print_log(f'auto-resume: newest complete checkpoint is {path} (epoch {epoch}, iteration '
              f'{iteration})', logger='current')
    return path


def install() -> None:
    """Make mmengine save atomically and auto-resume from complete checkpoints (idempotent).

    Both functions are replaced where they are defined and in the namespaces that imported them
    (``Runner``, ``FlexibleRunner``, ``mmengine.runner``); the strategies of ``FlexibleRunner``
    and ``CheckpointHook`` look them up at call time.
    """
    global _mmengine_save_checkpoint
    import mmengine.runner as package
    import mmengine.runner._flexible_runner as flexible_runner_module
    import mmengine.runner.checkpoint as checkpoint_module
    import mmengine.runner.runner as runner_module
    if _mmengine_save_checkpoint is None:
        _mmengine_save_checkpoint = checkpoint_module.save_checkpoint
    for module in (checkpoint_module, package, runner_module):
        module.save_checkpoint = save_checkpoint_atomically
    for module in (checkpoint_module, package, runner_module, flexible_runner_module):
        module.find_latest_checkpoint = find_newest_complete_checkpoint
