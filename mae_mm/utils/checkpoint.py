"""Checkpoint formats of MAE and the key maps between them, in one place.

mae-mm keeps the official MAE / timm parameter names inside its modules, so most formats differ
only by a prefix:

``official``
    facebookresearch/mae files, ``{'model': sd}``. Encoder keys ``patch_embed.proj.*``,
    ``cls_token``, ``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
    ``norm.*``; decoder keys ``decoder_embed.*``, ``mask_token``, ``decoder_pos_embed``,
    ``decoder_blocks.N.*``, ``decoder_norm.*``, ``decoder_pred.*`` (``mae_visualize_vit_*``
    only: ``mae_pretrain_vit_*`` files are encoder-only). Fine-tuned files add ``fc_norm.*`` and
    the classifier ``head.*``.
``timm``
    The same encoder names, bare or under ``state_dict``/``model``, without decoder keys.
``mae_mm``
    MMEngine checkpoints ``{'meta': ..., 'state_dict': sd, ...}``: ``backbone.<encoder key>``,
    ``neck.<decoder key>`` (the official ``mask_token`` is always ``neck.mask_token``;
    ``backbone.mask_token`` exists only in the mask-token-in-encoder ablation). The pixel head has
    no parameters.
``mmpretrain``
    mmpretrain / mmselfsup 1.x MAE checkpoints under ``state_dict``: ``backbone.layers.N.{ln1,
    attn.qkv,attn.proj,ln2,ffn.layers.0.0,ffn.layers.1}.*``, ``backbone.patch_embed.projection.*``,
    ``backbone.ln1`` (final norm), ``backbone.ln2`` (the norm after average pooling, fine-tuned
    models), ``neck.decoder_blocks.N.*`` with the same block names and ``neck.ln1`` (decoder
    norm). Reading only.

Position tables (``pos_embed``, ``decoder_pos_embed``) are copied as they are in every
conversion. mmpretrain's sin-cos table is the row/column transpose of the official one that mae-mm
generates; the weights of an mmpretrain model were trained with the transposed table, so
transposing it would change the model's outputs. The conversion report says which orientation a
table has; only code that *regenerates* a table for converted weights must care.

Every reading goes through :func:`mae_mm.utils.compat.load_checkpoint_file` (safe unpickler,
one-line :class:`~mae_mm.utils.compat.CheckpointLoadError` for damaged files); every writing
through :func:`save_checkpoint_atomic`.
"""
import math
import os
import re
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import torch

from .compat import load_checkpoint_file

__all__ = [
    'FORMATS', 'TARGET_FORMATS', 'ConversionResult', 'KeyMismatch', 'convert_state_dict',
    'detect_format', 'expected_keys', 'group_keys', 'load_backbone_state_dict',
    'mae_mm_checkpoint', 'mae_mm_to_official', 'mmpretrain_to_mae_mm', 'official_to_mae_mm',
    'report_key_mismatch', 'save_checkpoint_atomic', 'sincos_orientation', 'split_key_mismatch',
    'unwrap_state_dict'
]

FORMATS = ('mae_mm', 'official', 'timm', 'mmpretrain')
TARGET_FORMATS = ('mae_mm', 'official')

#: Keys that hold the state dict inside a checkpoint, in the order they are looked for.
WRAPPER_KEYS = ('state_dict', 'model', 'module')

#: Per-block parameter names of the official / timm / mae-mm Transformer block.
BLOCK_PARAMS = ('norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias',
                'attn.proj.weight', 'attn.proj.bias', 'norm2.weight', 'norm2.bias',
                'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias')

# Official keys of the decoder; everything else of an official file, but the classifier, is the
# encoder's.
_OFFICIAL_DECODER = re.compile(r'^(decoder_[a-z_]+|mask_token)(\.|$)')
_OFFICIAL_CLASSIFIER = re.compile(r'^head\.')
_OFFICIAL_ENCODER = re.compile(r'^(patch_embed\.proj\.|blocks\.\d+\.|cls_token$|pos_embed$|norm\.)')


def _mmpretrain_block_rules(src: str, dst: str) -> Tuple[Tuple[str, str], ...]:
    """mmpretrain ``TransformerEncoderLayer`` names under ``src.N`` -> official under ``dst.N``."""
    return (
        (rf'^{src}\.(\d+)\.ln1\.(weight|bias)$', rf'{dst}.\1.norm1.\2'),
        (rf'^{src}\.(\d+)\.ln2\.(weight|bias)$', rf'{dst}.\1.norm2.\2'),
        (rf'^{src}\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$', rf'{dst}.\1.attn.\2.\3'),
        (rf'^{src}\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)$', rf'{dst}.\1.mlp.fc1.\2'),
        (rf'^{src}\.(\d+)\.ffn\.layers\.1\.(weight|bias)$', rf'{dst}.\1.mlp.fc2.\2'),
    )


# mmpretrain ``backbone.<key>`` (MAEViT / VisionTransformer) -> official encoder key.
_MMPRETRAIN_ENCODER_RULES = _mmpretrain_block_rules('layers', 'blocks') + (
    (r'^patch_embed\.projection\.(weight|bias)$', r'patch_embed.proj.\1'),
    (r'^ln1\.(weight|bias)$', r'norm.\1'),  # final norm
    (r'^ln2\.(weight|bias)$', r'fc_norm.\1'),  # norm after average pooling (fine-tuned)
    (r'^(cls_token|pos_embed)$', r'\1'),
)
# mmpretrain ``neck.<key>`` (MAEPretrainDecoder) -> official decoder key.
_MMPRETRAIN_DECODER_RULES = _mmpretrain_block_rules('decoder_blocks', 'decoder_blocks') + (
    (r'^ln1\.(weight|bias)$', r'decoder_norm.\1'),
    (r'^(decoder_embed|decoder_pred)\.(weight|bias)$', r'\1.\2'),
    (r'^(mask_token|decoder_pos_embed)$', r'\1'),
)


# ------------------------------------------------------------------------------------------------
# Recognising a checkpoint
# ------------------------------------------------------------------------------------------------
def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def unwrap_state_dict(state_or_ckpt: Mapping) -> Tuple['OrderedDict[str, torch.Tensor]',
                                                        Optional[str]]:
    """The state dict inside a checkpoint, and the key that held it.

    Looks under ``state_dict``, ``model`` and ``module`` (in that order), else takes the mapping
    itself as a bare state dict. A ``module.`` prefix on every key (a DDP-wrapped model) is
    removed.

    Args:
        state_or_ckpt (Mapping): A loaded checkpoint or a state dict.

    Returns:
        tuple: ``(state_dict, wrapper_key)``; ``wrapper_key`` is None for a bare state dict.
    """
    if not isinstance(state_or_ckpt, Mapping):
        raise TypeError(f'expected a checkpoint dict or a state dict, got '
                        f'{type(state_or_ckpt).__name__}')
    wrapper = None
    state = None
    for key in WRAPPER_KEYS:
        if _is_state_dict(state_or_ckpt.get(key)):
            state, wrapper = state_or_ckpt[key], key
            break
    if state is None:
        if not _is_state_dict(state_or_ckpt):
            top = sorted(str(k) for k in state_or_ckpt)[:12]
            raise ValueError('no state dict found in the checkpoint: it has none of the keys '
                             f'{list(WRAPPER_KEYS)} holding tensors, and is not itself a dict of '
                             f'tensors (top-level keys: {top})')
        state = state_or_ckpt
    if all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
    return OrderedDict(state), wrapper


def detect_format(state_or_ckpt: Mapping) -> str:
    """Which format a checkpoint (or a bare state dict) is in.

    Args:
        state_or_ckpt (Mapping): A loaded checkpoint or its state dict.

    Returns:
        str: ``'mae_mm'``, ``'official'``, ``'timm'`` or ``'mmpretrain'``. Official and timm
        files have the same encoder names; a file is called official when it is wrapped in
        ``model`` (as facebookresearch/mae saves) or has MAE decoder keys, else timm.

    Raises:
        ValueError: The keys match none of the formats.
    """
    state, wrapper = unwrap_state_dict(state_or_ckpt)
    keys = list(state)

    def any_match(pattern: str) -> bool:
        regex = re.compile(pattern)
        return any(regex.match(k) for k in keys)

    if any_match(r'(backbone\.)?(layers\.\d+\.(ln1|ffn\.layers)\.|patch_embed\.projection\.)') \
            or any_match(r'neck\.(decoder_blocks\.\d+\.(ln1|ffn\.layers)\.|ln1\.)'):
        return 'mmpretrain'
    if any_match(r'backbone\.(patch_embed\.proj\.|blocks\.\d+\.|cls_token$|pos_embed$)') \
            or any_match(r'neck\.(decoder_[a-z_]+|mask_token)(\.|$)'):
        return 'mae_mm'
    has_decoder = any(_OFFICIAL_DECODER.match(k) for k in keys)
    if has_decoder or any(_OFFICIAL_ENCODER.match(k) for k in keys):
        return 'official' if wrapper == 'model' or has_decoder else 'timm'
    raise ValueError('unknown checkpoint format: the keys match none of '
                     f'{list(FORMATS)} (first keys: {keys[:8]}). Hugging Face ViTMAE files '
                     '(vit.embeddings.*) are not supported: convert them to the official format '
                     'first')


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


# ------------------------------------------------------------------------------------------------
# Reference key sets and the mismatch report
# ------------------------------------------------------------------------------------------------
def _has_decoder(state: Mapping, fmt: str) -> bool:
    if fmt == 'mae_mm':
        return any(k.startswith('neck.') for k in state)
    return any(_OFFICIAL_DECODER.match(k) for k in state)


def _has_encoder(state: Mapping, fmt: str) -> bool:
    if fmt == 'mae_mm':
        return any(k.startswith('backbone.') for k in state)
    return any(_OFFICIAL_ENCODER.match(k) for k in state)


def _block_indices(keys: Iterable[str], block_prefix: str) -> List[int]:
    regex = re.compile(re.escape(block_prefix) + r'(\d+)\.')
    found = {int(m.group(1)) for m in map(regex.match, keys) if m}
    return list(range(max(found) + 1)) if found else []


def expected_keys(state_dict: Mapping, fmt: str = 'mae_mm') -> List[str]:
    """The complete key set of a MAE encoder (and decoder, when the state has one).

    The depths are read off the block indices in ``state_dict``; ``attn.qkv.bias`` is expected only
    when some block has it (``qkv_bias=False`` models); ``fc_norm`` only when present.

    Args:
        state_dict (Mapping): Keys in ``fmt``.
        fmt (str): ``'mae_mm'`` or ``'official'``.

    Returns:
        list[str]: The expected keys.
    """
    enc, dec = ('backbone.', 'neck.') if fmt == 'mae_mm' else ('', '')
    keys = list(state_dict)
    block_params = [p for p in BLOCK_PARAMS
                    if p != 'attn.qkv.bias' or any(k.endswith('.attn.qkv.bias') for k in keys)]
    out = [enc + 'cls_token', enc + 'pos_embed', enc + 'patch_embed.proj.weight',
           enc + 'patch_embed.proj.bias']
    out += [f'{enc}blocks.{i}.{p}' for i in _block_indices(keys, enc + 'blocks.')
            for p in block_params]
    out += [enc + 'norm.weight', enc + 'norm.bias']
    if any(k.startswith(enc + 'fc_norm.') for k in keys):
        out += [enc + 'fc_norm.weight', enc + 'fc_norm.bias']
    if any(k.startswith(enc + 'mask_token') for k in keys) and fmt == 'mae_mm':
        out.append(enc + 'mask_token')  # the mask-token-in-encoder ablation
    if _has_decoder(state_dict, fmt):
        out += [dec + 'mask_token', dec + 'decoder_pos_embed', dec + 'decoder_embed.weight',
                dec + 'decoder_embed.bias']
        out += [f'{dec}decoder_blocks.{i}.{p}'
                for i in _block_indices(keys, dec + 'decoder_blocks.') for p in block_params]
        out += [dec + 'decoder_norm.weight', dec + 'decoder_norm.bias',
                dec + 'decoder_pred.weight', dec + 'decoder_pred.bias']
    return out


@dataclass
class KeyMismatch:
    """Keys of a model against keys of a checkpoint (see :func:`split_key_mismatch`)."""
    matched: List[str]
    missing: List[str]
    expected_missing: List[str]
    unexpected: List[str]
    expected_unexpected: List[str]
    shape_mismatch: List[Tuple[str, tuple, tuple]]

    @property
    def ok(self) -> bool:
        """No missing, unexpected or mis-shaped key beyond the expected ones."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def report(self, title: str = 'checkpoint') -> str:
        """Readable lines; keys differing only in block index are grouped (``blocks.{0-11}``)."""
        total = len(self.matched) + len(self.missing) + len(self.expected_missing) \
            + len(self.shape_mismatch)
        lines = [f'{title}: {len(self.matched)} of {total} model keys loaded']
        sections = (
            (self.missing, 'MISSING in the checkpoint (left as initialised)'),
            (self.expected_missing, 'expected missing (not in this checkpoint format, fine)'),
            (self.unexpected, 'UNEXPECTED in the checkpoint (ignored)'),
            (self.expected_unexpected, 'expected unexpected (ignored, fine)'),
        )
        for keys, header in sections:
            if keys:
                lines.append(f'{header}: {len(keys)} key{"s" if len(keys) != 1 else ""}')
                lines += [f'  {k}' for k in group_keys(keys)]
        if self.shape_mismatch:
            lines.append(f'SHAPE MISMATCH (not loaded): {len(self.shape_mismatch)} keys')
            lines += [f'  {k}: model {list(m)} vs checkpoint {list(c)}'
                      for k, m, c in self.shape_mismatch]
        if self.ok:
            lines.append('no missing or unexpected keys'
                         + (' beyond the expected ones'
                            if self.expected_missing or self.expected_unexpected else ''))
        return '\n'.join(lines)


def _shape(value: Any) -> Optional[tuple]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _matches_any(key: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def split_key_mismatch(model_keys: Union[Iterable[str], Mapping],
                       ckpt_keys: Union[Iterable[str], Mapping],
                       expected_missing_patterns: Sequence[str] = (),
                       expected_unexpected_patterns: Sequence[str] = ()) -> KeyMismatch:
    """Sort keys into matched / missing / unexpected, separating the expected ones.

    Args:
        model_keys: The model's keys, or its state dict (key -> tensor or shape) to compare
            shapes too.
        ckpt_keys: The checkpoint's keys, or its state dict.
        expected_missing_patterns (Sequence[str]): Regular expressions (``re.search``) of keys
            that a model may lack in the checkpoint without it being an error, e.g.
            ``r'rel_pos'``, ``r'relative_position_bias_table$'``.
        expected_unexpected_patterns (Sequence[str]): Same for checkpoint keys the model does not
            use, e.g. ``r'^decoder_'``.

    Returns:
        KeyMismatch: Lists in the model's (resp. checkpoint's) order.
    """
    model_list, ckpt_list = list(model_keys), list(ckpt_keys)
    model_set, ckpt_set = set(model_list), set(ckpt_list)
    matched, missing, exp_missing, shape_mismatch = [], [], [], []
    for key in model_list:
        if key in ckpt_set:
            m_shape = _shape(model_keys[key]) if isinstance(model_keys, Mapping) else None
            c_shape = _shape(ckpt_keys[key]) if isinstance(ckpt_keys, Mapping) else None
            if m_shape is not None and c_shape is not None and m_shape != c_shape:
                shape_mismatch.append((key, m_shape, c_shape))
            else:
                matched.append(key)
        elif _matches_any(key, expected_missing_patterns):
            exp_missing.append(key)
        else:
            missing.append(key)
    unexpected, exp_unexpected = [], []
    for key in ckpt_list:
        if key not in model_set:
            (exp_unexpected if _matches_any(key, expected_unexpected_patterns)
             else unexpected).append(key)
    return KeyMismatch(matched, missing, exp_missing, unexpected, exp_unexpected, shape_mismatch)


def report_key_mismatch(model_keys: Union[Iterable[str], Mapping],
                        ckpt_keys: Union[Iterable[str], Mapping],
                        expected_missing_patterns: Sequence[str] = (),
                        expected_unexpected_patterns: Sequence[str] = (),
                        title: str = 'checkpoint') -> str:
    """A readable report of the keys a model and a checkpoint do not share.

    Expected-missing keys (e.g. relative-position tables, which MAE checkpoints never have) are
    listed in their own section, not as errors. See :func:`split_key_mismatch` for the arguments;
    ``title`` starts the first line.

    Returns:
        str: Several lines, e.g.::

            checkpoint: 26 of 30 model keys loaded
            expected missing (not in this checkpoint format, fine): 4 keys
              blocks.{0-1}.attn.{rel_pos_h,rel_pos_w}
            UNEXPECTED in the checkpoint (ignored): 2 keys
              head.{bias,weight}
    """
    return split_key_mismatch(model_keys, ckpt_keys, expected_missing_patterns,
                              expected_unexpected_patterns).report(title)


# ------------------------------------------------------------------------------------------------
# Grouping keys for reports
# ------------------------------------------------------------------------------------------------
def _ranges(values: Iterable[int]) -> str:
    values = sorted(set(values))
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f'{start}-{prev}')
        if v is not None:
            start = prev = v
    return parts[0] if len(parts) == 1 and '-' not in parts[0] else '{' + ','.join(parts) + '}'


def _template(key: str) -> Tuple[str, Tuple[int, ...], str]:
    parts = key.split('.')
    stem, last = parts[:-1], parts[-1]
    nums = tuple(int(p) for p in stem if p.isdigit())
    return '.'.join('#' if p.isdigit() else p for p in stem), nums, last


def _render(template: str, index_sets: List[Tuple[int, ...]]) -> Optional[str]:
    """``template`` with its ``#`` filled; None when the indices are not a full product."""
    if not index_sets or not index_sets[0]:
        return template
    columns = list(zip(*index_sets))
    product = 1
    for col in columns:
        product *= len(set(col))
    if product != len(set(index_sets)):
        return None
    out = template
    for col in columns:
        out = out.replace('#', _ranges(col), 1)
    return out


def group_keys(keys: Iterable[str]) -> List[str]:
    """Compact, exact display of many keys: ``blocks.{0-11}.attn.qkv.{bias,weight}``.

    Args:
        keys (Iterable[str]): Keys.

    Returns:
        list[str]: Lines; every key is covered by exactly one line, and a line stands for exactly
        the keys it expands to.
    """
    keys = list(dict.fromkeys(keys))
    by_template: 'OrderedDict[Tuple[str, str], List[Tuple[int, ...]]]' = OrderedDict()
    for key in keys:
        template, nums, last = _template(key)
        by_template.setdefault((template, last), []).append(nums)
    # merge the last components that share a template and exactly the same indices
    merged: 'OrderedDict[Tuple[str, Tuple], List[str]]' = OrderedDict()
    for (template, last), nums in by_template.items():
        merged.setdefault((template, tuple(sorted(set(nums)))), []).append(last)
    lines = []
    for (template, nums), lasts in merged.items():
        stem = _render(template, list(nums))
        tail = lasts[0] if len(lasts) == 1 else '{' + ','.join(sorted(lasts)) + '}'
        if stem is None:  # not a full product of indices: list the keys one by one
            for n in nums:
                stem_n = template
                for v in n:
                    stem_n = stem_n.replace('#', str(v), 1)
                lines += [f'{stem_n}.{last}' if stem_n else last for last in sorted(lasts)]
        else:
            lines.append(f'{stem}.{tail}' if stem else tail)
    return lines


def _first_index_template(key: str) -> Tuple[str, Optional[int]]:
    parts = key.split('.')
    for i, part in enumerate(parts):
        if part.isdigit():
            return '.'.join(parts[:i] + ['#'] + parts[i + 1:]), int(part)
    return key, None


def _group_pairs(pairs: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Group renames that differ only in their (shared) block index, then weight/bias."""
    groups: 'OrderedDict[Tuple[str, str], List[Optional[int]]]' = OrderedDict()
    for src, dst in pairs:
        s_t, s_i = _first_index_template(src)
        d_t, d_i = _first_index_template(dst)
        if s_i is None or s_i != d_i:
            groups.setdefault((src, dst), []).append(None)
        else:
            groups.setdefault((s_t, d_t), []).append(s_i)
    out = []
    for (s_t, d_t), indices in groups.items():
        if indices[0] is None:
            out.append((s_t, d_t))
        else:
            r = _ranges(indices)
            out.append((s_t.replace('#', r, 1), d_t.replace('#', r, 1)))
    merged: 'OrderedDict[Tuple[str, str], List[Tuple[str, str]]]' = OrderedDict()
    for s, d in out:
        s_stem, _, s_last = s.rpartition('.')
        d_stem, _, d_last = d.rpartition('.')
        merged.setdefault((s_stem, d_stem), []).append((s_last, d_last))
    lines = []
    for (s_stem, d_stem), lasts in merged.items():
        if len(lasts) > 1 and all(a == b for a, b in lasts):
            tail = '{' + ','.join(sorted(a for a, _ in lasts)) + '}'
            lasts = [(tail, tail)]
        lines += [(f'{s_stem}.{a}' if s_stem else a, f'{d_stem}.{b}' if d_stem else b)
                  for a, b in lasts]
    return lines


def _duplicates(items: List[str]) -> List[str]:
    seen, dup = set(), []
    for item in items:
        if item in seen:
            dup.append(item)
        seen.add(item)
    return dup


# ------------------------------------------------------------------------------------------------
# Position tables
# ------------------------------------------------------------------------------------------------
def sincos_orientation(table: torch.Tensor, num_extra_tokens: int = 1) -> Optional[str]:
    """Whether a position table is the official sin-cos table, its transpose, or neither.

    Args:
        table (Tensor): (1, extra + S*S, D) on a square grid.
        num_extra_tokens (int): Leading tokens not on the grid.

    Returns:
        str | None: ``'official'`` (mae-mm / facebookresearch), ``'transposed'`` (mmpretrain),
        ``'learned'`` (neither, e.g. after fine-tuning a trainable table) or None when the grid
        is not square (cannot tell).
    """
    from mae_mm.models.layers.pos_embed import sincos_2d_position_embedding  # no import cycle
    if table.dim() != 3 or table.shape[0] != 1:
        return None
    num = table.shape[1] - num_extra_tokens
    side = math.isqrt(num) if num > 0 else 0
    dim = table.shape[-1]
    if side * side != num or side < 2 or dim % 4:
        return None
    table = table.detach().float().cpu()
    official = sincos_2d_position_embedding((side, side), dim, num_extra_tokens)
    grid = official[:, num_extra_tokens:].reshape(side, side, dim).transpose(0, 1)
    transposed = torch.cat([official[:, :num_extra_tokens], grid.reshape(1, num, dim)], 1)
    tol = 1e-3  # fp16-saved tables differ by ~5e-4
    if torch.allclose(table, official, atol=tol):
        return 'official'
    if torch.allclose(table, transposed, atol=tol):
        return 'transposed'
    return 'learned'


def _pos_embed_notes(state: Mapping[str, torch.Tensor]) -> List[str]:
    notes = []
    for key, value in state.items():
        if not re.search(r'(^|\.)(decoder_)?pos_embed$', key):
            continue
        orientation = sincos_orientation(value)
        if orientation == 'transposed':
            notes.append(f'{key} is the sin-cos table in mmpretrain\'s (transposed) orientation; '
                         'it was copied as is because the weights were trained with it: code that '
                         'regenerates this table for these weights must transpose it')
        elif orientation == 'learned':
            notes.append(f'{key} is not a sin-cos table (trained or resized); copied as is')
    return notes


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def save_checkpoint_atomic(obj: Any, path: Union[str, os.PathLike]) -> str:
    """``torch.save`` to a temporary file in the same directory, then ``os.replace``.

    A reader never sees a half-written file, and an interrupted save leaves any older file at
    ``path`` intact.

    Args:
        obj: What to save.
        path (str | PathLike): Destination; its directory is created if needed.

    Returns:
        str: ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        with open(tmp, 'xb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def mae_mm_checkpoint(state_dict: Mapping[str, torch.Tensor],
                      meta: Optional[dict] = None) -> dict:
    """Wrap a mae-mm state dict as MMEngine saves it: ``{'meta': {...}, 'state_dict': sd}``.

    Such a file works as ``load_from`` (and as the checkpoint of ``tools/test.py``) and as
    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``; it holds no
    training state, so it cannot be resumed from.
    """
    from mae_mm.version import __version__
    full_meta = {'mae_mm_version': __version__}
    full_meta.update(meta or {})
    return {'meta': full_meta, 'state_dict': OrderedDict(state_dict)}
