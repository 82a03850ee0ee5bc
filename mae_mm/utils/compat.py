"""Compatibility of the pinned OpenMMLab stack with current torch, in one place.

mmengine 0.10.7 loads checkpoints with a bare ``torch.load(f, map_location=...)``. Since torch 2.6
that means ``weights_only=True``, and mmengine's own training checkpoints (which pickle a
``HistoryBuffer`` and numpy objects in ``message_hub``) stop loading: ``--resume`` and
``load_from`` fail (open-mmlab/mmengine#1655). The fix here keeps torch's safe unpickler and
allow-lists only the few types that mmengine writes into checkpoints, instead of turning safety off
(``weights_only=False`` / ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): a checkpoint that pickles anything
else is refused with a message naming the type.

One mmengine type needs help to be safe: ``HistoryBuffer`` pickles its table of statistics
methods, i.e. ``getattr(HistoryBuffer, 'mean')``, and allowing ``getattr`` would open the safe
unpickler wide. The table is class-level state that every instance re-creates, so it is dropped
from the pickled state; checkpoints written with mae-mm imported then load safely.

Checkpoints written by plain mmengine (with the table) are refused by the safe loader. For files
you trust, ``MAE_MM_TRUSTED_CHECKPOINTS=1`` falls back to ``weights_only=False``.

:func:`apply_compat_patches` also makes mmengine's Runner crash-safe: atomic checkpoint writes and
auto-resume from the newest *complete* checkpoint (:mod:`mae_mm.engine.checkpoint_files`), a
grouped key report (an error in mae-mm runs) for checkpoints that do not fit the model
(:mod:`mae_mm.engine.checkpoint_key_check`), and it registers
:class:`~mae_mm.engine.exact_resume_hook.ExactResumeHook`.
"""
import codecs
import os

import numpy as np
import torch

_PATCHED = False


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, not a checkpoint, unsafe content)."""


def checkpoint_safe_globals() -> list:
    """The non-tensor types that mmengine 0.10.7 stores in its training checkpoints."""
    from mmengine.logging.history_buffer import HistoryBuffer
    safe = [HistoryBuffer, np.ndarray, np.dtype, np._core.multiarray._reconstruct,
            np._core.multiarray.scalar, codecs.encode]
    # numpy>=1.25 pickles dtypes as instances of these per-type classes.
    safe += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith('DType')]
    return safe


def load_checkpoint_file(filename: str, map_location=None, mmap: bool = False) -> dict:
    """``torch.load`` of a trusted-format checkpoint with a one-line error for bad files.

    Args:
        filename (str): Path of the checkpoint.
        map_location: As for :func:`torch.load`.
        mmap (bool): Memory-map the tensors instead of reading them (cheap inspection of
            ``meta``). Defaults to False.

    Returns:
        dict: The loaded object.
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist: check the path '
                                '(load_from / --resume / init_cfg.checkpoint)')
    if os.environ.get('MAE_MM_TRUSTED_CHECKPOINTS') == '1':
        return torch.load(filename, map_location=map_location, weights_only=False,
                          mmap=mmap)
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True,
                              mmap=mmap)
    except Exception as err:  # torch raises several types for a damaged file
        raise CheckpointLoadError(f'cannot load checkpoint {filename!r}: {_load_failure(err)}') \
            from None


# What torch's safe unpickler says when a *well-formed* file pickles a type it does not allow.
_UNSAFE_TYPE = ('Unsupported global', 'unsupported GLOBAL', 'Can only create new object',
                'Can only build Tensor')


def _load_failure(err: Exception) -> str:
    """Why ``torch.load`` failed and what to do: a type outside the allow-list, or a bad file."""
    text = str(err).strip()
    # torch prefixes every safe-unpickler failure with a paragraph about weights_only; the cause
    # follows 'WeightsUnpickler error:'.
    detail = text.split('WeightsUnpickler error:', 1)[-1].strip() or type(err).__name__
    detail = detail.splitlines()[0].split('. ')[0]
    if any(marker in text for marker in _UNSAFE_TYPE):
        return ('it pickles a type outside the allow-list of mae_mm.utils.compat; if you trust '
                f'the file, set MAE_MM_TRUSTED_CHECKPOINTS=1 ({detail})')
    return f'the file is truncated or not a torch checkpoint; use an earlier checkpoint ({detail})'


def apply_compat_patches() -> None:
    """Install the fixes above into mmengine (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    def _history_buffer_state(self) -> dict:
        state = dict(self.__dict__)
        state.pop('_statistics_methods', None)
        return state

    HistoryBuffer.__getstate__ = _history_buffer_state

    def _load_local(filename, map_location=None):
        return load_checkpoint_file(os.path.expanduser(filename), map_location)

    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)

    # Crash-safe saving, resuming and loading for the Runner (imported here: they use this module).
    from mae_mm.engine import checkpoint_files, checkpoint_key_check
    from mae_mm.engine import exact_resume_hook  # noqa: F401  registers ExactResumeHook
    checkpoint_files.install()
    checkpoint_key_check.install()
    _PATCHED = True
