"""Conversion between the checkpoint formats (see :mod:`.formats`), with a report."""
import os
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .formats import (FORMATS, TARGET_FORMATS, _MMPRETRAIN_DECODER_RULES,
                      _MMPRETRAIN_ENCODER_RULES, _OFFICIAL_CLASSIFIER, _OFFICIAL_DECODER,
                      _has_decoder, _has_encoder, _pos_embed_notes, detect_format, expected_keys,
                      unwrap_state_dict)
from .hf import read_checkpoint
from .hf_keys import (HF_ENCODER_PREFIX, HF_NAME_VERSIONS, hf_drop_reason, hf_key_to_official,
                      official_key_to_hf)
from .key_report import (KeyMismatch, _duplicates, _group_pairs, group_keys,
                         split_key_mismatch)
from .vitdet_keys import VITDET_FORMATS, vitdet_expected_keys, vitdet_to_mae_mm


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
        """The output keys against the complete MAE key set of the same depth (a ViTDet
        backbone's for the ViTDet formats)."""
        if self.source_format in VITDET_FORMATS:
            return split_key_mismatch(vitdet_expected_keys(self.state_dict), self.state_dict)
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
        what = 'ViTDet backbone' if self.source_format in VITDET_FORMATS else 'MAE model'
        if check.missing:
            lines.append(f'missing from a complete {what} ({len(check.missing)} keys; a '
                         'model loading this file keeps its own initialisation for them):')
            lines += [f'  {k}' for k in group_keys(check.missing)]
        if check.unexpected:
            lines.append(f'not MAE keys ({len(check.unexpected)} keys; a mae-mm model will '
                         'report them as unexpected):')
            lines += [f'  {k}' for k in group_keys(check.unexpected)]
        if not check.missing and not check.unexpected and what != 'MAE model':
            lines.append(f'all keys of a complete {what} are present')
        elif not check.missing and not check.unexpected:
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
    elif source == 'hf':
        kept, dropped, notes = _hf_to_mae_mm(state)
    elif source in VITDET_FORMATS:
        kept, dropped, notes = vitdet_to_mae_mm(state, source)
    else:
        raise ValueError(f'unknown source format {source!r}: use one of {FORMATS}')
    return kept, dropped, notes


def _grouped_name(keys: Sequence[str]) -> str:
    """``a.{query,key,value}.weight`` for keys that differ in one part only."""
    prefix = os.path.commonprefix(list(keys))
    suffix = os.path.commonprefix([k[len(prefix):][::-1] for k in keys])[::-1]
    middles = [k[len(prefix):len(k) - len(suffix)] for k in keys]
    return f'{prefix}{{{",".join(middles)}}}{suffix}'


def _hf_to_mae_mm(state: Mapping[str, torch.Tensor]):
    """Hugging Face ViTMAE (transformers 4.x or 5.x names) -> mae-mm names; q/k/v are
    concatenated into ``attn.qkv`` (rows q, k, v)."""
    kept, dropped, notes, unconverted = [], [], [], []
    parts: Dict[str, Dict[int, Tuple[str, torch.Tensor]]] = defaultdict(dict)
    for key, value in state.items():
        found = hf_key_to_official(key)
        if found is None:
            reason = hf_drop_reason(key)
            if reason is not None:
                dropped.append((key, reason))
            else:
                unconverted.append(key)
                kept.append((key, key, value))
            continue
        official, row = found
        dst = ('neck.' if _OFFICIAL_DECODER.match(official) else 'backbone.') + official
        if row is None:
            kept.append((key, dst, value))
            continue
        if dst not in parts:
            kept.append((None, dst, None))  # the fused tensor goes where its query was
        parts[dst][row] = (key, value)
    for i, (src, dst, value) in enumerate(kept):
        if src is not None:
            continue
        rows = parts[dst]
        if sorted(rows) != [0, 1, 2]:
            have = ', '.join(rows[r][0] for r in sorted(rows))
            raise ValueError(f'the Hugging Face checkpoint has {have} but not all three of '
                             f'query, key and value for {dst}: the file is incomplete')
        shapes = {tuple(rows[r][1].shape[1:]) for r in range(3)}
        if len(shapes) != 1:
            raise ValueError(f'query, key and value for {dst} have different shapes '
                             f'{[tuple(rows[r][1].shape) for r in range(3)]}')
        kept[i] = (_grouped_name([rows[r][0] for r in range(3)]), dst,
                   torch.cat([rows[r][1] for r in range(3)], dim=0))
    if unconverted:
        notes.append(f'{len(unconverted)} Hugging Face keys have no mae-mm counterpart and were '
                     'kept unchanged: ' + ', '.join(group_keys(unconverted)))
    return kept, dropped, notes


def _official_to_hf_pairs(pairs, version: str, encoder_prefix: str):
    """(src, official key, tensor) -> (src, Hugging Face key, tensor); ``attn.qkv`` is split
    into q, k and v."""
    out, dropped = [], []
    for src, official, value in pairs:
        names = official_key_to_hf(official, version, encoder_prefix)
        if not names:
            reason = ('norm after average pooling of a fine-tuned model' if
                      official.startswith('fc_norm.') else 'not a ViTMAE parameter')
            dropped.append((src, f'{reason} (no Hugging Face ViTMAE counterpart)'))
        elif len(names) == 1:
            out.append((src, names[0], value))
        else:
            if value.shape[0] % 3:
                raise ValueError(f'{src} has {value.shape[0]} rows, not q, k and v of equal size')
            out += [(src, name, chunk.clone())
                    for name, chunk in zip(names, value.chunk(3, dim=0))]
    return out, dropped


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
                       source: Optional[str] = None,
                       hf_names: str = 'v4') -> ConversionResult:
    """Convert a checkpoint (or state dict) of any supported format.

    Args:
        state_or_ckpt (Mapping): A loaded checkpoint or a bare state dict.
        target (str): ``'mae_mm'``, ``'official'`` or ``'hf'`` (Hugging Face
            ``ViTMAEForPreTraining`` names; with ``encoder_only``, a bare ``ViTMAEModel``).
        encoder_only (bool): Leave the decoder out (an ``mae_pretrain_vit_*``-style file, or a
            mae-mm file with ``backbone.*`` keys only).
        source (str, optional): Format of the input; detected when None.
        hf_names (str): For ``target='hf'``: ``'v4'`` (transformers 4.x names, which 5.x also
            reads) or ``'v5'`` (the names transformers >= 5.17 uses in memory).

    Returns:
        ConversionResult: The state dict and the record of what was done.
    """
    if target not in TARGET_FORMATS:
        raise ValueError(f'unknown target format {target!r}: use one of {TARGET_FORMATS}')
    state, _ = unwrap_state_dict(state_or_ckpt)
    source = source or detect_format(state_or_ckpt)
    if source in VITDET_FORMATS and target != 'mae_mm':
        raise ValueError(f'a {source} checkpoint converts to mae_mm names only (target '
                         f'{target!r}): convert it to mae_mm, then the backbone to {target}')
    kept, dropped, notes = _to_mae_mm(state, source)
    if target in ('official', 'hf'):
        pairs, more = _mae_mm_to_official_pairs(kept, encoder_only)
        dropped += more
        if target == 'hf':
            if hf_names not in HF_NAME_VERSIONS:
                raise ValueError(f'unknown hf_names {hf_names!r}: use one of {HF_NAME_VERSIONS}')
            pairs, more = _official_to_hf_pairs(pairs, hf_names,
                                                '' if encoder_only else HF_ENCODER_PREFIX)
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
    if source in VITDET_FORMATS:
        return result
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


def hf_to_mae_mm(state_dict: Mapping[str, torch.Tensor],
                 encoder_only: bool = False) -> 'OrderedDict[str, torch.Tensor]':
    """Hugging Face ``ViTMAEForPreTraining`` / ``ViTMAEModel`` names (transformers 4.x or 5.x)
    -> mae-mm names; q, k and v become one ``attn.qkv``. Pooler and classifier are dropped.

    Args:
        state_dict (Mapping): Hugging Face keys (``{'state_dict': sd}`` is fine).
        encoder_only (bool): Leave the decoder out.

    Returns:
        OrderedDict: mae-mm keys.
    """
    return convert_state_dict(state_dict, 'mae_mm', encoder_only=encoder_only,
                              source='hf').state_dict


def mae_mm_to_hf(state_dict: Mapping[str, torch.Tensor], encoder_only: bool = False,
                 hf_names: str = 'v4') -> 'OrderedDict[str, torch.Tensor]':
    """mae-mm names -> Hugging Face ``ViTMAEForPreTraining`` names (``ViTMAEModel`` names with
    ``encoder_only``); ``attn.qkv`` is split into q, k and v.

    Args:
        state_dict (Mapping): mae-mm keys (a checkpoint with ``state_dict`` is fine).
        encoder_only (bool): Leave the decoder out.
        hf_names (str): ``'v4'`` (transformers 4.x names; 5.x renames them on loading) or
            ``'v5'``.

    Returns:
        OrderedDict: Hugging Face keys; ``fc_norm``, ``head.*`` and the ablation's encoder mask
        token are dropped.
    """
    return convert_state_dict(state_dict, 'hf', encoder_only=encoder_only, source='mae_mm',
                              hf_names=hf_names).state_dict


def load_backbone_state_dict(path_or_ckpt: Union[str, os.PathLike, Mapping],
                             prefix: str = 'backbone.',
                             map_location: Any = 'cpu') -> 'OrderedDict[str, torch.Tensor]':
    """The encoder weights of a checkpoint of any format, without prefix, for a backbone to load.

    Args:
        path_or_ckpt (str | PathLike | Mapping): A checkpoint file (read with the safe loader),
            a Hugging Face model folder or ``.safetensors`` file, a loaded checkpoint or a bare
            state dict; official, timm, mmpretrain, Hugging Face ViTMAE or mae-mm.
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
        ckpt = read_checkpoint(path_or_ckpt, map_location=map_location)
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
