"""Conversion between the checkpoint formats (see :mod:`.formats`), with a report."""
import os
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ..compat import load_checkpoint_file
from .formats import (FORMATS, TARGET_FORMATS, _MMPRETRAIN_DECODER_RULES,
                      _MMPRETRAIN_ENCODER_RULES, _OFFICIAL_CLASSIFIER, _OFFICIAL_DECODER,
                      _has_decoder, _has_encoder, _pos_embed_notes, detect_format,
                      expected_keys, unwrap_state_dict)
from .key_report import (KeyMismatch, _duplicates, _group_pairs, group_keys,
                         split_key_mismatch)


# ------------------------------------------------------------------------------------------------
# Conversion
# ------------------------------------------------------------------------------------------------
@dataclass
class ConversionResult:
    """The outcome of :func:`convert_state_dict`.

    Attributes:
        state_dict (OrderedDict): The converted state dict.
        source_format (str): Format of the input.
        target_format (str): Format of ``state_dict``.
        renamed (list[tuple[str, str]]): ``(input key, output key)`` of every key kept.
        dropped (list[tuple[str, str]]): ``(input key, reason)`` of every key left out.
        notes (list[str]): Other findings (position-table orientation, unconverted names).
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    source_format: str
    target_format: str
    renamed: List[Tuple[str, str]] = field(default_factory=list)
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def key_check(self) -> 'KeyMismatch':
        """The output keys against the complete MAE key set of the same depth."""
        expected = expected_keys(self.state_dict, self.target_format)
        return split_key_mismatch(expected, self.state_dict)

    def report(self) -> str:
        """A readable summary: conversions, dropped keys, missing and unexpected keys."""
        lines = [f'converted {len(self.renamed)} keys from {self.source_format} to '
                 f'{self.target_format} format']
        same, renames = 0, []
        prefix_changes: Dict[str, int] = defaultdict(int)
        for src, dst in self.renamed:
            if src == dst:
                same += 1
            elif dst.endswith('.' + src) and dst.count('.') - src.count('.') == 1:
                prefix_changes[f'added prefix {dst[:-len(src)]!r}'] += 1
            elif src.endswith('.' + dst) and src.count('.') - dst.count('.') == 1:
                prefix_changes[f'removed prefix {src[:-len(dst)]!r}'] += 1
            else:
                renames.append((src, dst))
        for change, count in prefix_changes.items():
            lines.append(f'{change}: {count} keys')
        if renames:
            lines.append(f'renamed ({len(renames)} keys):')
            lines += [f'  {s} -> {d}' for s, d in _group_pairs(renames)]
        if same:
            lines.append(f'kept under the same name: {same} keys')
        if self.dropped:
            lines.append(f'left out ({len(self.dropped)} keys):')
            by_reason: Dict[str, List[str]] = defaultdict(list)
            for key, reason in self.dropped:
                by_reason[reason].append(key)
            for reason, keys in by_reason.items():
                lines.append(f'  {reason}:')
                grouped = group_keys(keys)
                tops = {k.split('.', 1)[0] for k in keys}
                if len(grouped) > 8 and len(tops) == 1:
                    grouped = [f'{tops.pop()}.* ({len(keys)} keys)']
                lines += [f'    {k}' for k in grouped]
        check = self.key_check()
        if check.missing:
            lines.append(f'missing from a complete MAE model ({len(check.missing)} keys; a '
                         'model loading this file keeps its own initialisation for them):')
            lines += [f'  {k}' for k in group_keys(check.missing)]
        if check.unexpected:
            lines.append(f'not MAE keys ({len(check.unexpected)} keys; a mae-mm model will '
                         'report them as unexpected):')
            lines += [f'  {k}' for k in group_keys(check.unexpected)]
        if not check.missing and not check.unexpected:
            lines.append('all keys of a complete MAE '
                         + ('encoder' if not _has_decoder(self.state_dict, self.target_format)
                            else 'encoder and decoder') + ' are present')
        lines += [f'note: {n}' for n in self.notes]
        return '\n'.join(lines)


def _apply_rules(key: str, rules: Sequence[Tuple[str, str]]) -> Optional[str]:
    for pattern, repl in rules:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return None


def _to_mae_mm(state: Mapping[str, torch.Tensor], source: str):
    """Map any format to mae-mm names; returns (pairs of (src, dst, tensor), dropped, notes)."""
    kept, dropped, notes = [], [], []
    if source == 'mae_mm':
        kept = [(k, k, v) for k, v in state.items()]
    elif source in ('official', 'timm'):
        for key, value in state.items():
            if _OFFICIAL_CLASSIFIER.match(key):
                dropped.append((key, 'classifier of a fine-tuned model (not part of MAE)'))
            elif _OFFICIAL_DECODER.match(key):
                kept.append((key, 'neck.' + key, value))
            else:
                kept.append((key, 'backbone.' + key, value))
    elif source == 'mmpretrain':
        bare = not any(k.startswith(('backbone.', 'neck.')) for k in state)
        unconverted = []
        for key, value in state.items():
            if bare:
                key_in = 'backbone.' + key
            else:
                key_in = key
            if key_in.startswith('backbone.'):
                new = _apply_rules(key_in[len('backbone.'):], _MMPRETRAIN_ENCODER_RULES)
                prefix = 'backbone.'
            elif key_in.startswith('neck.'):
                new = _apply_rules(key_in[len('neck.'):], _MMPRETRAIN_DECODER_RULES)
                prefix = 'neck.'
            elif key_in.startswith('head.'):
                dropped.append((key, 'head of the mmpretrain model (not part of MAE)'))
                continue
            else:
                dropped.append((key, 'neither backbone nor neck of the mmpretrain model'))
                continue
            if new is None:
                unconverted.append(key)
                kept.append((key, key_in, value))
            else:
                kept.append((key, prefix + new, value))
        if unconverted:
            notes.append(f'{len(unconverted)} mmpretrain keys have no mae-mm counterpart and '
                         'were kept unchanged: ' + ', '.join(group_keys(unconverted)))
    else:
        raise ValueError(f'unknown source format {source!r}: use one of {FORMATS}')
    return kept, dropped, notes


def _mae_mm_to_official_pairs(kept, encoder_only: bool):
    out, dropped = [], []
    for src, mid, value in kept:
        if mid == 'backbone.mask_token':
            dropped.append((src, 'encoder mask token of the mask-token-in-encoder ablation (no '
                            'official counterpart)'))
        elif mid.startswith('backbone.'):
            out.append((src, mid[len('backbone.'):], value))
        elif mid.startswith('neck.'):
            if encoder_only:
                dropped.append((src, 'decoder (encoder-only output)'))
            else:
                out.append((src, mid[len('neck.'):], value))
        elif mid.startswith('head.'):
            dropped.append((src, 'head parameters (no official counterpart)'))
        else:
            dropped.append((src, 'neither encoder (backbone.) nor decoder (neck.)'))
    return out, dropped


def convert_state_dict(state_or_ckpt: Mapping,
                       target: str = 'mae_mm',
                       encoder_only: bool = False,
                       source: Optional[str] = None) -> ConversionResult:
    """Convert a checkpoint (or state dict) of any supported format.

    Args:
        state_or_ckpt (Mapping): A loaded checkpoint or a bare state dict.
        target (str): ``'mae_mm'`` or ``'official'``.
        encoder_only (bool): Leave the decoder out (an ``mae_pretrain_vit_*``-style file, or a
            mae-mm file with ``backbone.*`` keys only).
        source (str, optional): Format of the input; detected when None.

    Returns:
        ConversionResult: The state dict and the record of what was done.
    """
    if target not in TARGET_FORMATS:
        raise ValueError(f'unknown target format {target!r}: use one of {TARGET_FORMATS}')
    state, _ = unwrap_state_dict(state_or_ckpt)
    source = source or detect_format(state_or_ckpt)
    kept, dropped, notes = _to_mae_mm(state, source)
    if target == 'official':
        pairs, more = _mae_mm_to_official_pairs(kept, encoder_only)
        dropped += more
    else:
        pairs = []
        for src, dst, value in kept:
            if encoder_only and dst.startswith('neck.'):
                dropped.append((src, 'decoder (encoder-only output)'))
            else:
                pairs.append((src, dst, value))
    result = ConversionResult(
        state_dict=OrderedDict((dst, value) for _, dst, value in pairs),
        source_format=source, target_format=target,
        renamed=[(src, dst) for src, dst, _ in pairs], dropped=dropped, notes=notes)
    if len(result.state_dict) != len(pairs):
        raise ValueError('two input keys map to the same output key: '
                         f'{_duplicates([dst for _, dst, _ in pairs])}')
    result.notes += _pos_embed_notes(result.state_dict)
    if not encoder_only and not _has_decoder(result.state_dict, target) \
            and _has_encoder(result.state_dict, target):
        result.notes.append('the input has no decoder (an encoder-only file): fine for a backbone '
                            "(init_cfg prefix='backbone.') or fine-tuning; as load_from of a MAE "
                            'model the decoder keeps its random initialisation')
    return result


def official_to_mae_mm(state_dict: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Official / timm names -> mae-mm names (``backbone.``/``neck.``); the classifier is dropped.

    Args:
        state_dict (Mapping): Official or timm keys (a wrapper such as ``{'model': sd}`` is fine).

    Returns:
        OrderedDict: mae-mm keys, tensors shared with the input.
    """
    return convert_state_dict(state_dict, 'mae_mm', source='official').state_dict


def mae_mm_to_official(state_dict: Mapping[str, torch.Tensor],
                       encoder_only: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """mae-mm names -> official names (wrap the result as ``{'model': sd}`` to save it).

    Args:
        state_dict (Mapping): mae-mm keys (a checkpoint with ``state_dict`` is fine).
        encoder_only (bool): Leave the decoder out, as ``mae_pretrain_vit_*.pth`` files do.

    Returns:
        OrderedDict: Official keys; ``backbone.mask_token`` (ablation only) and ``head.*`` are
        dropped.
    """
    return convert_state_dict(state_dict, 'official', encoder_only=encoder_only,
                              source='mae_mm').state_dict


def mmpretrain_to_mae_mm(state_dict: Mapping[str, torch.Tensor],
                         encoder_only: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """mmpretrain / mmselfsup 1.x MAE names -> mae-mm names; position tables copied as is.

    Args:
        state_dict (Mapping): mmpretrain keys (a checkpoint with ``state_dict`` is fine); a bare
            ``MAEViT``/``VisionTransformer`` state dict (no ``backbone.``) is taken as backbone.
        encoder_only (bool): Leave the decoder out.

    Returns:
        OrderedDict: mae-mm keys. Keys without a counterpart (e.g. layer scale) are kept as they
        are, so that loading reports them; ``head.*`` is dropped.
    """
    return convert_state_dict(state_dict, 'mae_mm', encoder_only=encoder_only,
                              source='mmpretrain').state_dict


def load_backbone_state_dict(path_or_ckpt: Union[str, os.PathLike, Mapping],
                             prefix: str = 'backbone.',
                             map_location: Any = 'cpu') -> 'OrderedDict[str, torch.Tensor]':
    """The encoder weights of a checkpoint of any format, without prefix, for a backbone to load.

    Args:
        path_or_ckpt (str | PathLike | Mapping): A checkpoint file (read with the safe loader), a
            loaded checkpoint or a bare state dict; official, timm, mmpretrain or mae-mm.
        prefix (str): Prefix of the backbone's keys in the mae-mm view of the checkpoint. Official,
            timm and mmpretrain encoders are under ``'backbone.'`` after conversion; give another
            prefix only for mae-mm-format checkpoints of other models (e.g. ``'backbone.vit.'``).
        map_location: As for :func:`torch.load` when a path is given.

    Returns:
        OrderedDict: Encoder keys in mae-mm / official names (``patch_embed.proj.weight``,
        ``blocks.0.attn.qkv.weight``...). Compare with the model's keys through
        :func:`report_key_mismatch`.

    Raises:
        ValueError: No key has ``prefix`` (the message lists the prefixes found).
        CheckpointLoadError: The file cannot be read.
    """
    if isinstance(path_or_ckpt, (str, os.PathLike)):
        ckpt = load_checkpoint_file(os.fspath(path_or_ckpt), map_location=map_location)
    else:
        ckpt = path_or_ckpt
    result = convert_state_dict(ckpt, 'mae_mm')
    if prefix and not prefix.endswith('.'):
        prefix += '.'
    state = OrderedDict((k[len(prefix):], v) for k, v in result.state_dict.items()
                        if k.startswith(prefix))
    if not state:
        found = sorted({k.split('.', 1)[0] + '.' for k in result.state_dict})
        raise ValueError(f'no key of the checkpoint ({result.source_format} format) starts with '
                         f'{prefix!r} after conversion to mae-mm names; prefixes found: {found}')
    return state
