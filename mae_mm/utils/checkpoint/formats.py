"""Checkpoint formats of MAE: their key layouts, detection and reference key sets.

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
``mmdet_vitdet``, ``detectron2_vitdet``
    Whole ViTDet detectors of the references (mmdet's and detectron2's ``projects/ViTDet``),
    converted to mae-mm's ``ViTDetBackbone`` / ``SimpleFeaturePyramid`` names (mmdet's heads
    kept); the layouts are in :mod:`.vitdet_keys`. Reading only, to ``mae_mm`` only.
``hf``
    Hugging Face transformers ``ViTMAEForPreTraining`` (``vit.`` encoder, ``decoder.`` decoder)
    or a bare ``ViTMAEModel`` (the encoder without the ``vit.`` prefix), as ``model.safetensors``
    or ``pytorch_model.bin`` with a ``config.json`` beside it (:mod:`.hf`). The names, checked
    against ``transformers/models/vit_mae/modeling_vit_mae.py`` of 4.57.6, 5.17.0, 5.18.0 and
    5.24.0 and against models they build and save:
    ``embeddings.{cls_token,position_embeddings}``, ``embeddings.patch_embeddings.projection.*``,
    ``layernorm.*`` (final norm); per layer, transformers 4.x ``encoder.layer.N.{layernorm_before,
    attention.attention.{query,key,value},attention.output.dense,layernorm_after,
    intermediate.dense,output.dense}.*``, transformers 5.x ``layers.N.{layernorm_before,
    attention.{q,k,v,o}_proj,layernorm_after,mlp.fc1,mlp.fc2}.*``; decoder ``decoder.{
    decoder_embed,decoder_norm,decoder_pred}.*``, ``decoder.mask_token``,
    ``decoder.decoder_pos_embed`` and ``decoder.decoder_layers.N.*`` with the same per-layer names.
    transformers 5.x ``save_pretrained`` (5.24.0) writes the 4.x names back, but its decoder layers
    as ``decoder.decoder_encoder.layer.N.*``; read too. q, k and v are three projections there and
    one ``attn.qkv`` (rows q, k, v) here. Written with the 4.x names, which the Hub's
    ``facebook/vit-mae-*`` files have and which transformers 5.x renames on loading. Their
    LayerNorm eps is ``layer_norm_eps`` of ``config.json`` (1e-12 by default), not MAE's 1e-6.

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
import re
from collections import OrderedDict
from typing import Any, Iterable, List, Mapping, Optional, Tuple

import torch

from ..pos_embed import sincos_2d_position_embedding
from .hf_keys import HF_ENCODER_PREFIX, HF_SIGNATURE, hf_key_to_official, official_key_to_hf
from .vitdet_keys import VITDET_FORMATS, detect_vitdet_format

FORMATS = ('mae_mm', 'official', 'timm', 'mmpretrain', 'hf') + VITDET_FORMATS
TARGET_FORMATS = ('mae_mm', 'official', 'hf')

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
        str: ``'mae_mm'``, ``'official'``, ``'timm'``, ``'mmpretrain'``, ``'hf'``,
        ``'mmdet_vitdet'`` or ``'detectron2_vitdet'`` (see :func:`detect_vitdet_format`). Official
        and timm files have the same encoder names; a file is called official when it is wrapped
        in ``model`` (as facebookresearch/mae saves) or has MAE decoder keys, else timm. A
        Hugging Face file is recognised by its patch projection, layers or decoder layers.

    Raises:
        ValueError: The keys match none of the formats.
    """
    state, wrapper = unwrap_state_dict(state_or_ckpt)
    keys = list(state)

    def any_match(pattern: str) -> bool:
        regex = re.compile(pattern)
        return any(regex.match(k) for k in keys)

    if any(HF_SIGNATURE.match(k) for k in keys):
        return 'hf'
    vitdet = detect_vitdet_format(keys)
    if vitdet is not None:
        return vitdet
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
                     f'{list(FORMATS)} (first keys: {keys[:8]})')


def hf_layout(keys: Iterable[str]) -> Tuple[str, str]:
    """``(name layout, encoder prefix)`` of Hugging Face ViTMAE keys (see
    :data:`HF_NAME_VERSIONS`); ``'vit.'`` for ``ViTMAEForPreTraining`` files."""
    keys = list(keys)
    v5 = re.compile(r'^((vit\.)?layers\.\d+\.|decoder\.decoder_layers\.\d+\.'
                    r'(attention\.[qkvo]_proj|mlp\.fc[12])\.)')
    if any(v5.match(k) for k in keys):
        version = 'v5'
    elif any(k.startswith('decoder.decoder_encoder.layer.') for k in keys):
        version = 'v5_saved'
    else:
        version = 'v4'
    prefix = HF_ENCODER_PREFIX if any(k.startswith((HF_ENCODER_PREFIX, 'decoder.'))
                                      for k in keys) else ''
    return version, prefix


def _has_decoder(state: Mapping, fmt: str) -> bool:
    if fmt == 'mae_mm':
        return any(k.startswith('neck.') for k in state)
    if fmt == 'hf':
        return any(k.startswith('decoder.') for k in state)
    return any(_OFFICIAL_DECODER.match(k) for k in state)


def _has_encoder(state: Mapping, fmt: str) -> bool:
    if fmt == 'mae_mm':
        return any(k.startswith('backbone.') for k in state)
    if fmt == 'hf':
        return any(found is not None and not _OFFICIAL_DECODER.match(found[0])
                   for found in map(hf_key_to_official, state))
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
        fmt (str): ``'mae_mm'``, ``'official'`` or ``'hf'`` (in the layout of the keys given).

    Returns:
        list[str]: The expected keys.
    """
    if fmt == 'hf':
        version, prefix = hf_layout(state_dict)
        official = OrderedDict()
        for key in state_dict:
            found = hf_key_to_official(key)
            if found is not None:
                official[found[0]] = None
        return [hf_key for key in expected_keys(official, 'official')
                for hf_key in official_key_to_hf(key, version, prefix)]
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
