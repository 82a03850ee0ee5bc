"""Reading checkpoints safely on current torch, without changing mmengine.

mmengine 0.10.7 loads checkpoints with a bare ``torch.load(f, map_location=...)``. Since torch 2.6
that means ``weights_only=True``, and mmengine's own training checkpoints (which pickle a
``HistoryBuffer`` and numpy objects in ``message_hub``) stop loading: ``--resume`` fails
(open-mmlab/mmengine#1655). :func:`load_checkpoint_file` keeps torch's safe unpickler and
allow-lists only the types mmengine itself writes into checkpoints (:func:`checkpoint_safe_globals`)
instead of turning safety off (``weights_only=False``); a checkpoint that pickles anything else is
refused with a one-line message naming the type and the opt-in.

One mmengine type needs care: ``HistoryBuffer.__getstate__`` pickles its table of statistics
methods as ``getattr(HistoryBuffer, 'mean')`` and so on. Allowing ``builtins.getattr`` itself
would open the safe unpickler wide, so the allow-list maps that name to
:func:`history_buffer_statistic`, which resolves only ``HistoryBuffer``'s own statistics methods
and refuses everything else. Checkpoints written by plain mmengine therefore load unchanged.

Nothing here is installed into mmengine: the allow-list is used inside mae-mm's own loaders
(:class:`mae_mm.engine.MAERunner`, the converters and tools) and, for strategies that load
through mmengine, inside a ``torch.serialization.safe_globals`` block that ends with the call.
``MAE_MM_TRUSTED_CHECKPOINTS=1`` (or torch's own ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) falls
back to full unpickling, for files you trust.
"""
import codecs
import contextlib
import functools
import inspect
import os

import numpy as np
import torch

#: Environment variables that allow full unpickling of trusted checkpoint files.
TRUST_VARIABLES = ('MAE_MM_TRUSTED_CHECKPOINTS', 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')


class CheckpointLoadError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, not a checkpoint, unsafe content)."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A complete checkpoint that pickles a type outside the allow-list."""


def history_buffer_statistic(owner, name: str):
    """``getattr(HistoryBuffer, name)`` for HistoryBuffer's statistics methods only.

    Stands in for ``builtins.getattr`` in the safe unpickler (see the module docstring).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    methods = getattr(HistoryBuffer, '_statistics_methods', {})
    if owner is HistoryBuffer and (name in methods or name in ('min', 'max', 'current',
                                                                'mean')):
        return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'getattr({getattr(owner, "__name__", owner)!r}, {name!r}) is not allowed in a '
        'checkpoint: only HistoryBuffer statistics methods are')


def _numpy_core():
    # numpy 2 renamed numpy.core to numpy._core; pickles name the module they were written with.
    return getattr(np, '_core', None) or np.core


def checkpoint_safe_globals() -> list:
    """The non-tensor globals that mmengine 0.10.7 stores in its training checkpoints."""
    from mmengine.logging.history_buffer import HistoryBuffer
    core = _numpy_core()
    safe = [HistoryBuffer, np.ndarray, np.dtype, core.multiarray._reconstruct,
            core.multiarray.scalar, codecs.encode,
            (history_buffer_statistic, '__builtin__.getattr'),
            (history_buffer_statistic, 'builtins.getattr')]
    # Pickles of numpy 1 name numpy.core.multiarray; of numpy 2, numpy._core.multiarray.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        safe += [(core.multiarray._reconstruct, f'{module}._reconstruct'),
                 (core.multiarray.scalar, f'{module}.scalar')]
    # numpy>=1.25 pickles dtypes as instances of these per-type classes.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        safe += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith('DType')]
    return safe


def register_load_state_dict_pre_hook(module: torch.nn.Module, hook):
    """``module.register_load_state_dict_pre_hook(hook)`` on every supported torch.

    The public method exists from torch 2.5; on torch 2.1-2.4 it is the method it wraps, with
    the same hook signature ``hook(module, state_dict, prefix, local_metadata, strict,
    missing_keys, unexpected_keys, error_msgs)``.

    Returns:
        A handle whose ``remove()`` unregisters the hook.
    """
    public = getattr(module, 'register_load_state_dict_pre_hook', None)
    if public is not None:
        return public(hook)
    return module._register_load_state_dict_pre_hook(hook, with_module=True)


def trusted_by_environment() -> bool:
    """Whether the user allowed full unpickling (:data:`TRUST_VARIABLES`)."""
    return any(os.environ.get(name) == '1' for name in TRUST_VARIABLES)


def torch_loads_weights_only_by_default() -> bool:
    """torch >= 2.6: a bare ``torch.load`` uses the safe unpickler."""
    return tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 6)


@functools.lru_cache(maxsize=None)
def mmengine_lacks_safe_loading() -> bool:
    """Whether mmengine's checkpoint loading fails on its own checkpoints with this torch
    (decided once per process: it depends only on the installed packages).

    True for torch >= 2.6 with an mmengine whose local loader calls ``torch.load`` without
    handling ``weights_only`` (0.10.7 and older); a release that handles it is left alone.
    """
    if not torch_loads_weights_only_by_default():
        return False
    from mmengine.runner import checkpoint as mmengine_checkpoint
    try:
        source = inspect.getsource(mmengine_checkpoint.load_from_local)
    except (OSError, TypeError):
        return True
    return 'weights_only' not in source and 'safe_globals' not in source


@contextlib.contextmanager
def allow_mmengine_checkpoints():
    """Within the block, torch's safe unpickler also accepts mmengine's checkpoint types.

    For code that loads through mmengine (FlexibleRunner strategies). Does nothing where it is
    not needed (torch < 2.6, or an mmengine that handles it); torch restores its allow-list on
    exit.
    """
    if not mmengine_lacks_safe_loading() or not hasattr(torch.serialization, 'safe_globals'):
        yield
        return
    with torch.serialization.safe_globals(checkpoint_safe_globals()):
        yield


def load_checkpoint_file(filename: str, map_location=None, mmap: bool = False) -> dict:
    """``torch.load`` of a trusted-format checkpoint with a one-line error for bad files.

    Args:
        filename (str): Path of the checkpoint.
        map_location: As for :func:`torch.load`.
        mmap (bool): Memory-map the tensors instead of reading them (cheap inspection of
            ``meta``). Defaults to False.

    Returns:
        dict: The loaded object.

    Raises:
        FileNotFoundError: No such file.
        UnsafeCheckpointError: A complete file that pickles a type outside the allow-list.
        CheckpointLoadError: A truncated or otherwise unreadable file.
    """
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist: check the path '
                                '(load_from / --resume / init_cfg.checkpoint)')
    kwargs = dict(map_location=map_location, mmap=mmap) if mmap else dict(
        map_location=map_location)
    # Trusted files; or torch < 2.5, which has no allow-list and unpickles fully by default (as
    # mmengine does there).
    full = trusted_by_environment() or not hasattr(torch.serialization, 'safe_globals')
    try:
        if full:
            return torch.load(filename, weights_only=False, **kwargs)
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(filename, weights_only=True, **kwargs)
    except Exception as err:  # torch raises several types for a damaged file
        text = str(err).strip()
        # torch prefixes every safe-unpickler failure with a paragraph about weights_only; the
        # cause follows 'WeightsUnpickler error:'.
        detail = text.split('WeightsUnpickler error:', 1)[-1].strip() or type(err).__name__
        detail = detail.splitlines()[0].split('. ')[0]
        if not full and any(marker in text for marker in _UNSAFE_TYPE):
            raise UnsafeCheckpointError(
                f'cannot load checkpoint {filename!r}: it pickles a type outside the allow-list '
                'of mae_mm.utils.compat; if you trust the file, set '
                f'MAE_MM_TRUSTED_CHECKPOINTS=1 ({detail})') from None
        raise CheckpointLoadError(
            f'cannot load checkpoint {filename!r}: the file is truncated or not a torch '
            f'checkpoint; use an earlier checkpoint ({detail})') from None


# What torch's safe unpickler says when a *well-formed* file pickles a type it does not allow.
_UNSAFE_TYPE = ('Unsupported global', 'unsupported GLOBAL', 'Can only create new object',
                'Can only build Tensor', 'unrecognized function', 'is not allowed in a checkpoint')
