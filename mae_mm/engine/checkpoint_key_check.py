"""A grouped key report (an error in mae-mm runs) when a loaded checkpoint does not fit the model.

mmengine's Runner loads ``load_from`` and ``--resume`` checkpoints with ``strict=False`` and prints
one long, ungrouped warning of missing and unexpected keys that is easy to miss: training then goes
on with part of the model left at its initial values. :class:`mae_mm.engine.MAERunner` loads
through :func:`load_checkpoint_to_model_checked` instead:

- keys are compared *after* the model's own load hooks (``MaskedAutoencoder`` converts official,
  timm and mmpretrain files), and reported grouped (``blocks.{0-11}.attn.qkv.{bias,weight}``) by
  :class:`mae_mm.utils.checkpoint.KeyMismatch`: missing, unexpected and shape-mismatched keys;
- relative-position tables (``rel_pos_h/w``, ``relative_position_bias_table``), which downstream
  backbones add and MAE checkpoints never hold, are expected-missing: reported, not an error;
- in a mae-mm run (``default_scope='mae_mm'``) any other mismatch raises
  :class:`CheckpointKeyMismatchError`, one line naming the file, the keys and the fix (the full
  report is logged first); in other scopes (an mmdet or mmseg run with mae-mm's runner) the report
  is a warning and loading goes on as in mmengine, because their recipes rely on partial loading
  (e.g. ``load_from`` a COCO detector into a detector with other classes).
"""
import re
from collections import OrderedDict
from typing import Mapping, Sequence, Tuple

from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import load_state_dict
from mmengine.registry import DefaultScope

from mae_mm.registry import SCOPE
from mae_mm.utils.checkpoint import KeyMismatch, split_key_mismatch
from mae_mm.utils.compat import CheckpointLoadError, register_load_state_dict_pre_hook

#: Keys a model may lack in any MAE checkpoint without it being an error.
EXPECTED_MISSING_PATTERNS = (r'rel_pos', r'relative_position')

_SIZE_MISMATCH = re.compile(
    r'size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from '
    r'checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)')


class CheckpointKeyMismatchError(ValueError):
    """A ``load_from`` / ``--resume`` checkpoint whose keys do not match the model."""


def _shape(text: str) -> Tuple[int, ...]:
    return tuple(int(v) for v in text.strip('[]').split(',') if v.strip())


def key_mismatch_of_load(model_keys: Sequence[str], missing: Sequence[str],
                         unexpected: Sequence[str], error_msgs: Sequence[str]) -> KeyMismatch:
    """Sort the outcome of a ``strict=False`` load into a :class:`KeyMismatch`.

    Args:
        model_keys (Sequence[str]): The model's state-dict keys.
        missing (Sequence[str]): Keys the loader did not find in the checkpoint.
        unexpected (Sequence[str]): Checkpoint keys the model has no place for.
        error_msgs (Sequence[str]): torch's load errors (``size mismatch for ...``).

    Returns:
        KeyMismatch: With relative-position tables as expected-missing and BatchNorm's
        ``num_batches_tracked`` counters ignored, as mmengine does.
    """
    missing = {k for k in missing if 'num_batches_tracked' not in k}
    shapes = [(m.group(1), _shape(m.group(3)), _shape(m.group(2)))
              for m in (_SIZE_MISMATCH.search(msg) for msg in error_msgs) if m]
    present = [k for k in model_keys if k not in missing] + list(unexpected)
    mismatch = split_key_mismatch(model_keys, present, EXPECTED_MISSING_PATTERNS)
    wrong_shape = {key for key, _, _ in shapes}
    mismatch.matched = [k for k in mismatch.matched if k not in wrong_shape]
    mismatch.shape_mismatch = shapes
    return mismatch


def mismatch_message(source: str, mismatch: KeyMismatch) -> str:
    """One line: the file, the keys that do not fit (grouped) and the fix."""
    return (f'checkpoint {source!r} does not match the model (load_from / --resume): '
            f'{mismatch.summary()}: load a checkpoint of this model (tools/model_converters/ '
            'converts official, timm and mmpretrain files), or only the encoder with '
            "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')")


def load_checkpoint_to_model_checked(model, checkpoint, source: str = 'checkpoint',
                                     strict: bool = False,
                                     revise_keys=((r'^module\.', ''), )):
    """Load ``checkpoint`` into ``model`` as mmengine's Runner does, with the key check above.

    Args:
        model (nn.Module): The model, possibly wrapped (DDP).
        checkpoint (Mapping): A loaded checkpoint (``state_dict`` inside, or the state dict).
        source (str): The file's name, for the report.
        strict (bool): Raise on any mismatch (mmengine's ``strict``).
        revise_keys (Sequence[tuple[str, str]]): ``(pattern, replacement)`` rewrites of the
            checkpoint's keys, as mmengine's (``module.`` prefixes of wrapped models).

    Returns:
        Mapping: ``checkpoint``.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointLoadError(
            f'{source!r} is not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict '
            'with a state_dict; use a file written by a training run or by '
            'tools/model_converters/')
    target = model.module if is_model_wrapper(model) else model
    state_dict = checkpoint.get('state_dict', checkpoint)
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    for pattern, replacement in revise_keys:
        state_dict = OrderedDict((re.sub(pattern, replacement, k), v)
                                 for k, v in state_dict.items())
    state_dict._metadata = metadata
    outcome = {}

    def capture(module, state_dict, prefix, local_metadata, strict_, missing, unexpected,
                error_msgs):
        # The loader fills these lists while it walks the model; keep them for after the load.
        if not prefix:
            outcome.update(missing=missing, unexpected=unexpected, errors=error_msgs)

    handle = register_load_state_dict_pre_hook(target, capture)
    try:
        # 'silent': mmengine's own ungrouped warning is replaced by the report below.
        load_state_dict(target, state_dict, strict=strict,
                        logger=MMLogger.get_current_instance() if strict else 'silent')
    finally:
        handle.remove()
    if outcome:
        _report(source, key_mismatch_of_load(list(target.state_dict()), outcome['missing'],
                                             outcome['unexpected'], outcome['errors']))
    return checkpoint


def _report(source: str, mismatch: KeyMismatch) -> None:
    logger = MMLogger.get_current_instance()
    report = mismatch.report(f'checkpoint {source}')
    if mismatch.ok:
        logger.info(report)
        return
    scope = DefaultScope.get_current_instance()
    if scope is not None and scope.scope_name == SCOPE:
        logger.error(report)
        raise CheckpointKeyMismatchError(mismatch_message(source, mismatch))
    logger.warning(report)
