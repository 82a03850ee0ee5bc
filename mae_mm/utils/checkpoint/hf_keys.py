"""Hugging Face transformers ViTMAE key names: the one map that both conversion directions use.

Names verified against transformers 4.57.6 and 5.17-5.24 (``modeling_vit_mae.py``, real
``state_dict()`` and ``save_pretrained`` output); see :data:`HF_NAME_VERSIONS`.
"""
import re
from typing import List, Optional, Tuple

#: The layouts of Hugging Face ViTMAE names: ``'v4'``, transformers 4.x (also what the Hub's
#: ``facebook/vit-mae-*`` files have); ``'v5'``, transformers >= 5.17 in memory
#: (``model.state_dict()``); ``'v5_saved'``, what transformers 5.x ``save_pretrained`` writes: it
#: maps the names back to 4.x's, but its reverse of the ``encoder.layer.`` -> ``layers.`` rename
#: also hits the decoder (``decoder.decoder_layers.N`` -> ``decoder.decoder_encoder.layer.N``;
#: seen with transformers 5.24.0, which reads such files back; 4.x does not).
HF_NAME_VERSIONS = ('v4', 'v5', 'v5_saved')
#: Prefix of the encoder inside ``ViTMAEForPreTraining`` (a bare ``ViTMAEModel`` has none).
HF_ENCODER_PREFIX = 'vit.'
#: Official encoder / decoder key -> Hugging Face key (the same in transformers 4.x and 5.x).
HF_ENCODER_KEYS = {
    'cls_token': 'embeddings.cls_token',
    'pos_embed': 'embeddings.position_embeddings',
    'patch_embed.proj.weight': 'embeddings.patch_embeddings.projection.weight',
    'patch_embed.proj.bias': 'embeddings.patch_embeddings.projection.bias',
    'norm.weight': 'layernorm.weight',
    'norm.bias': 'layernorm.bias',
}
HF_DECODER_KEYS = {
    'decoder_embed.weight': 'decoder.decoder_embed.weight',
    'decoder_embed.bias': 'decoder.decoder_embed.bias',
    'mask_token': 'decoder.mask_token',
    'decoder_pos_embed': 'decoder.decoder_pos_embed',
    'decoder_norm.weight': 'decoder.decoder_norm.weight',
    'decoder_norm.bias': 'decoder.decoder_norm.bias',
    'decoder_pred.weight': 'decoder.decoder_pred.weight',
    'decoder_pred.bias': 'decoder.decoder_pred.bias',
}
#: Official block list -> Hugging Face layer list per layout (the encoder's under its prefix).
HF_LAYER_LISTS = {
    'blocks': {'v4': 'encoder.layer', 'v5': 'layers', 'v5_saved': 'encoder.layer'},
    'decoder_blocks': {'v4': 'decoder.decoder_layers', 'v5': 'decoder.decoder_layers',
                       'v5_saved': 'decoder.decoder_encoder.layer'},
}
#: Official module of a block -> Hugging Face module of a layer, per layout. ``attn.q/k/v`` are
#: the rows of the official fused ``attn.qkv``, in this order.
_V4_MODULES = {
    'norm1': 'layernorm_before',
    'attn.q': 'attention.attention.query',
    'attn.k': 'attention.attention.key',
    'attn.v': 'attention.attention.value',
    'attn.proj': 'attention.output.dense',
    'norm2': 'layernorm_after',
    'mlp.fc1': 'intermediate.dense',
    'mlp.fc2': 'output.dense',
}
_V5_MODULES = {
    'norm1': 'layernorm_before',
    'attn.q': 'attention.q_proj',
    'attn.k': 'attention.k_proj',
    'attn.v': 'attention.v_proj',
    'attn.proj': 'attention.o_proj',
    'norm2': 'layernorm_after',
    'mlp.fc1': 'mlp.fc1',
    'mlp.fc2': 'mlp.fc2',
}
HF_LAYER_MODULES = {module: {'v4': _V4_MODULES[module], 'v5': _V5_MODULES[module],
                             'v5_saved': _V4_MODULES[module]} for module in _V4_MODULES}
HF_QKV = ('attn.q', 'attn.k', 'attn.v')
#: Keys of Hugging Face ViT files that are not MAE's, and why they are left out.
HF_NOT_MAE = (
    (r'^(vit\.)?pooler\.', 'pooler of a Hugging Face ViT (not part of MAE)'),
    (r'^classifier\.', 'classifier of a fine-tuned model (not part of MAE)'),
    (r'^(vit\.)?embeddings\.mask_token$', 'mask token of a Hugging Face masked-image-modeling '
     'ViT (not part of MAE)'),
)

_HF_LAYER_KEY = re.compile(r'^(?P<list>encoder\.layer|layers|decoder\.decoder_layers|'
                           r'decoder\.decoder_encoder\.layer)\.(?P<i>\d+)\.'
                           r'(?P<module>.+)\.(?P<param>weight|bias)$')
_HF_TO_OFFICIAL_MODULE = {(names[v], v): official
                          for official, names in HF_LAYER_MODULES.items() for v in names}
_HF_TO_OFFICIAL_LIST = {names[v]: official
                        for official, names in HF_LAYER_LISTS.items() for v in names}
_HF_ENCODER_TO_OFFICIAL = {v: k for k, v in HF_ENCODER_KEYS.items()}
_HF_DECODER_TO_OFFICIAL = {v: k for k, v in HF_DECODER_KEYS.items()}
# What tells a Hugging Face ViTMAE file apart: its patch projection, its layers, its decoder.
HF_SIGNATURE = re.compile(
    r'^((vit\.)?(embeddings\.patch_embeddings\.projection\.|encoder\.layer\.\d+\.'
    r'(attention\.attention\.|layernorm_before\.)|layers\.\d+\.(attention\.[qkvo]_proj\.|'
    r'layernorm_before\.))|decoder\.(decoder_layers\.\d+\.|decoder_encoder\.layer\.\d+\.|'
    r'decoder_pred\.|decoder_embed\.))')


def hf_key_to_official(key: str) -> Optional[Tuple[str, Optional[int]]]:
    """The official name of a Hugging Face ViTMAE key (transformers 4.x or 5.x names).

    Args:
        key (str): e.g. ``vit.encoder.layer.0.attention.attention.key.weight`` or
            ``vit.layers.0.attention.k_proj.weight``.

    Returns:
        tuple | None: ``(official key, row)``: ``row`` is 0/1/2 for the q/k/v parts of
        ``attn.qkv``, else None. None for a key that is not a ViTMAE parameter.
    """
    bare = key[len(HF_ENCODER_PREFIX):] if key.startswith(HF_ENCODER_PREFIX) else key
    if bare in _HF_ENCODER_TO_OFFICIAL and not key.startswith('decoder.'):
        return _HF_ENCODER_TO_OFFICIAL[bare], None
    if key in _HF_DECODER_TO_OFFICIAL:
        return _HF_DECODER_TO_OFFICIAL[key], None
    match = _HF_LAYER_KEY.match(key if key.startswith('decoder.') else bare)
    if not match:
        return None
    for version in HF_NAME_VERSIONS:
        module = _HF_TO_OFFICIAL_MODULE.get((match['module'], version))
        if module is not None and HF_LAYER_LISTS[_HF_TO_OFFICIAL_LIST[match['list']]][
                version] == match['list']:
            official_list = _HF_TO_OFFICIAL_LIST[match['list']]
            if module in HF_QKV:
                return (f'{official_list}.{match["i"]}.attn.qkv.{match["param"]}',
                        HF_QKV.index(module))
            return f'{official_list}.{match["i"]}.{module}.{match["param"]}', None
    return None


def official_key_to_hf(key: str, version: str = 'v4',
                       encoder_prefix: str = HF_ENCODER_PREFIX) -> List[str]:
    """The Hugging Face ViTMAE key(s) of an official key: three for ``attn.qkv`` (q, k, v).

    Args:
        key (str): Official encoder or decoder key.
        version (str): ``'v4'`` (transformers 4.x names, read by 4.x and 5.x), ``'v5'`` or
            ``'v5_saved'`` (see :data:`HF_NAME_VERSIONS`).
        encoder_prefix (str): ``'vit.'`` (``ViTMAEForPreTraining``) or ``''`` (``ViTMAEModel``).

    Returns:
        list[str]: Empty when the key has no counterpart (``fc_norm``, ``head``).
    """
    if version not in HF_NAME_VERSIONS:
        raise ValueError(f'unknown transformers name version {version!r}: use one of '
                         f'{HF_NAME_VERSIONS}')
    if key in HF_ENCODER_KEYS:
        return [encoder_prefix + HF_ENCODER_KEYS[key]]
    if key in HF_DECODER_KEYS:
        return [HF_DECODER_KEYS[key]]
    match = re.match(r'^(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)$', key)
    if not match:
        return []
    official_list, index, module, param = match.groups()
    prefix = (encoder_prefix if official_list == 'blocks' else '') \
        + f'{HF_LAYER_LISTS[official_list][version]}.{index}.'
    if module == 'attn.qkv':
        return [f'{prefix}{HF_LAYER_MODULES[part][version]}.{param}' for part in HF_QKV]
    if module in HF_LAYER_MODULES:
        return [f'{prefix}{HF_LAYER_MODULES[module][version]}.{param}']
    return []


def hf_drop_reason(key: str) -> Optional[str]:
    """Why a key of a Hugging Face ViT file is left out (None: not a known non-MAE key)."""
    for pattern, reason in HF_NOT_MAE:
        if re.match(pattern, key):
            return reason
    return None
