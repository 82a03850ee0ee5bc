"""Which checkpoint a run resumes from, and writing checkpoints atomically.

mmengine 0.10.7 writes a checkpoint in place (``open(path, 'wb')``), so a process killed during
the write leaves a truncated file under the final name; ``last_checkpoint`` (the pointer that
auto-resume follows) is also rewritten in place, and may name that truncated file or be empty.
``resume=True`` then fails on restart, losing a multi-day run. :class:`mae_mm.engine.MAERunner`
uses the two functions below instead (mmengine itself is not changed):

- :func:`replace_atomically`: a checkpoint is written under a hidden temporary name in the same
  folder, flushed to disk and renamed over the final name: a reader sees the old file or the
  complete new one, never a partial one.
- :func:`find_newest_complete_checkpoint` (auto-resume): the newest checkpoint that is complete
  and resumable, whatever ``last_checkpoint`` says. Nothing it cannot read is ever overwritten:
  a truncated file is moved aside (``epoch_2.pth`` -> ``epoch_2.pth.incomplete``) before the run
  goes on, and a complete checkpoint that the safe loader refuses stops the run with a one-line
  error naming the files and the opt-in.
"""
import logging
import os
import os.path as osp
import zipfile
from typing import List, Optional, Tuple

from mmengine.dist import is_main_process
from mmengine.logging import print_log

from mae_mm.utils.compat import (CheckpointLoadError, UnsafeCheckpointError,
                                 load_checkpoint_file)

POINTER_FILE = 'last_checkpoint'
INCOMPLETE_SUFFIX = '.incomplete'


def replace_atomically(tmp_path: str, path: str) -> None:
    """Flush ``tmp_path`` to disk and rename it over ``path`` (then flush the folder entry)."""
    with open(tmp_path, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    try:
        folder = os.open(osp.dirname(osp.abspath(path)), os.O_RDONLY)
    except OSError:
        return  # e.g. a file system without directory handles: the rename itself is atomic
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


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
    """``(iter, epoch)`` of a resumable mmengine checkpoint, None if it holds weights only.

    Memory-maps the file, so only the pickled structure is read, not the tensors.

    Raises:
        UnsafeCheckpointError: The file pickles a type outside the allow-list.
    """
    try:
        checkpoint = load_checkpoint_file(path, map_location='cpu', mmap=True)
    except UnsafeCheckpointError:
        raise
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


def _move_aside(path: str) -> str:
    """Rename a truncated checkpoint so that the resumed run cannot overwrite it."""
    target, n = path + INCOMPLETE_SUFFIX, 1
    while osp.exists(target):
        target, n = f'{path}{INCOMPLETE_SUFFIX}.{n}', n + 1
    os.replace(path, target)
    return target


def find_newest_complete_checkpoint(work_dir: str) -> Optional[str]:
    """The resumable checkpoint with the most training iterations in ``work_dir``.

    Replaces mmengine's ``find_latest_checkpoint`` in :class:`~mae_mm.engine.MAERunner`:
    instead of trusting ``last_checkpoint``, every ``*.pth`` file (and the folder that pointer
    names, for ``CheckpointHook(out_dir=...)``) is checked. Weights-only files are skipped;
    truncated files are moved aside (by the main process) so that they are kept, not
    overwritten. Ties (same iteration) go to the most recently written file.

    Args:
        work_dir (str): The run's work directory.

    Returns:
        str | None: Path of the checkpoint to resume from, or None (start from scratch).

    Raises:
        UnsafeCheckpointError: Some complete checkpoint cannot be read safely; the run must not
            start over on top of it.
    """
    ranked, incomplete, unsafe, skipped = [], [], [], []
    for path in _candidates(work_dir):
        if not is_complete_checkpoint(path):
            incomplete.append(path)
            continue
        try:
            progress = _progress(path)
        except UnsafeCheckpointError:
            unsafe.append(osp.basename(path))
            continue
        if progress is None:
            skipped.append(osp.basename(path))
        else:
            ranked.append((progress, osp.getmtime(path), path))
    if unsafe:
        raise UnsafeCheckpointError(
            f'cannot auto-resume in {work_dir}: checkpoints {unsafe} pickle types outside the '
            'safe allow-list; if you trust them set MAE_MM_TRUSTED_CHECKPOINTS=1, otherwise move '
            'them out of the work_dir to start from scratch (nothing was overwritten)')
    if incomplete and is_main_process():
        moved = [osp.basename(_move_aside(path)) for path in incomplete]
        print_log(f'auto-resume: truncated checkpoints moved aside (kept, not resumed from): '
                  f'{moved}', logger='current', level=logging.WARNING)
    partial = [name for name in (os.listdir(work_dir) if osp.isdir(work_dir) else [])
               if name.startswith('.') and name.endswith('.tmp')]
    if skipped or partial:
        print_log(f'auto-resume ignores weights-only and partial files in {work_dir}: '
                  f'{sorted(skipped + partial)}', logger='current', level=logging.WARNING)
    if not ranked:
        print_log(f'auto-resume: no complete checkpoint in {work_dir}; training starts from '
                  'scratch', logger='current')
        return None
    (iteration, epoch), _, path = max(ranked)
    print_log(f'auto-resume: newest complete checkpoint is {path} (epoch {epoch}, iteration '
              f'{iteration})', logger='current')
    return path
