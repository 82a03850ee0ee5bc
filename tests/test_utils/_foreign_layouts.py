"""The key names and file layouts of foreign MAE checkpoints, written down by hand from the public
sources of those projects -- never derived from mae-mm's own keys or functions.

facebookresearch/mae, ``models_mae.py`` (``MaskedAutoencoderViT``), in module order:
  encoder ``patch_embed.proj`` (timm ``PatchEmbed``: conv D x C x p x p), ``cls_token`` (1, 1, D),
  ``pos_embed`` (1, 1 + L, D; the cls row first), ``blocks.N`` (timm ``Block``: ``norm1``,
  ``attn.qkv`` (3D x D, with bias), ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), ``norm``;
  decoder ``decoder_embed`` (Linear D -> Dd), ``mask_token`` (1, 1, Dd), ``decoder_pos_embed``
  (1, 1 + L, Dd), ``decoder_blocks.N`` (same ``Block``), ``decoder_norm``, ``decoder_pred``
  (Linear Dd -> p * p * C). ``main_pretrain.py`` saves ``{'model': state_dict, 'optimizer': ...,
  'epoch': ..., 'scaler': ..., 'args': ...}``; the released ``mae_visualize_vit_*.pth`` hold
  ``{'model': encoder + decoder}``, the released ``mae_pretrain_vit_*.pth`` ``{'model': encoder}``
  (no ``mask_token``, no ``decoder_*``).

timm, ``timm/models/vision_transformer.py``: ``vit_{base,large}_patch16_224.mae`` are
``VisionTransformer(num_classes=0)`` with the default ``global_pool='token'`` loading those
``mae_pretrain_vit_*.pth`` files. With ``global_pool='token'``, ``fc_norm`` is ``nn.Identity``
(no keys) and ``norm`` is a LayerNorm; with ``num_classes=0`` ``head`` is ``nn.Identity`` (no
keys); ``Block``'s ``ls1``/``ls2`` (no ``init_values``) and ``attn.q_norm``/``k_norm`` are
identities (no keys). ``model.state_dict()`` is the bare dict (no ``'model'`` wrapper).
With ``global_pool='avg'`` (fine-tuning) ``norm`` is the identity and ``fc_norm`` a LayerNorm.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

# One Transformer block of the official code and of timm (``timm.models.vision_transformer.Block``).
OFFICIAL_BLOCK = ['norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias',
                  'attn.proj.weight', 'attn.proj.bias', 'norm2.weight', 'norm2.bias',
                  'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias']

# The tiny MAE of the unit tests (tests/conftest.py TINY_ARCH, decoder 32 wide, 1 block).
TINY = dict(num_layers=2, depth=1, embed_dims=64, mlp_dims=128, decoder_dims=32,
            decoder_mlp_dims=128, patch_size=8, num_patches=16, in_chans=3)


def official_encoder_names(num_layers: int = TINY['num_layers']) -> List[str]:
    """The encoder keys of facebookresearch/mae (and of ``mae_pretrain_vit_*.pth``)."""
    return (['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias']
            + [f'blocks.{i}.{p}' for i in range(num_layers) for p in OFFICIAL_BLOCK]
            + ['norm.weight', 'norm.bias'])


def official_decoder_names(depth: int = TINY['depth']) -> List[str]:
    """The decoder keys of facebookresearch/mae (``mae_visualize_vit_*.pth`` have them)."""
    return (['decoder_embed.weight', 'decoder_embed.bias', 'mask_token', 'decoder_pos_embed']
            + [f'decoder_blocks.{i}.{p}' for i in range(depth) for p in OFFICIAL_BLOCK]
            + ['decoder_norm.weight', 'decoder_norm.bias', 'decoder_pred.weight',
               'decoder_pred.bias'])


def timm_names(num_layers: int = TINY['num_layers'], global_pool: str = 'token',
               num_classes: int = 0) -> List[str]:
    """The state-dict keys of timm's ``VisionTransformer`` (MAE weights: token pool, no head)."""
    names = ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias']
    names += [f'blocks.{i}.{p}' for i in range(num_layers) for p in OFFICIAL_BLOCK]
    if global_pool == 'token':
        names += ['norm.weight', 'norm.bias']
    elif global_pool == 'avg':
        names += ['fc_norm.weight', 'fc_norm.bias']
    else:
        raise ValueError(global_pool)
    if num_classes > 0:
        names += ['head.weight', 'head.bias']
    return names


def official_shapes(num_layers: int = TINY['num_layers'], depth: int = TINY['depth'],
                    embed_dims: int = TINY['embed_dims'], mlp_dims: int = TINY['mlp_dims'],
                    decoder_dims: int = TINY['decoder_dims'],
                    decoder_mlp_dims: int = TINY['decoder_mlp_dims'],
                    patch_size: int = TINY['patch_size'], num_patches: int = TINY['num_patches'],
                    in_chans: int = TINY['in_chans']) -> Dict[str, Tuple[int, ...]]:
    """The tensor shapes of ``models_mae.py``'s modules, by key."""
    D, Dd, p, L = embed_dims, decoder_dims, patch_size, num_patches

    def block(prefix, n, width, hidden):
        out = {}
        for i in range(n):
            b = f'{prefix}{i}.'
            out.update({b + 'norm1.weight': (width, ), b + 'norm1.bias': (width, ),
                        b + 'attn.qkv.weight': (3 * width, width),
                        b + 'attn.qkv.bias': (3 * width, ),
                        b + 'attn.proj.weight': (width, width), b + 'attn.proj.bias': (width, ),
                        b + 'norm2.weight': (width, ), b + 'norm2.bias': (width, ),
                        b + 'mlp.fc1.weight': (hidden, width), b + 'mlp.fc1.bias': (hidden, ),
                        b + 'mlp.fc2.weight': (width, hidden), b + 'mlp.fc2.bias': (width, )})
        return out

    shapes = {'cls_token': (1, 1, D), 'pos_embed': (1, 1 + L, D),
              'patch_embed.proj.weight': (D, in_chans, p, p), 'patch_embed.proj.bias': (D, ),
              'norm.weight': (D, ), 'norm.bias': (D, ), 'fc_norm.weight': (D, ),
              'fc_norm.bias': (D, ),
              'decoder_embed.weight': (Dd, D), 'decoder_embed.bias': (Dd, ),
              'mask_token': (1, 1, Dd), 'decoder_pos_embed': (1, 1 + L, Dd),
              'decoder_norm.weight': (Dd, ), 'decoder_norm.bias': (Dd, ),
              'decoder_pred.weight': (p * p * in_chans, Dd),
              'decoder_pred.bias': (p * p * in_chans, )}
    shapes.update(block('blocks.', num_layers, D, mlp_dims))
    shapes.update(block('decoder_blocks.', depth, Dd, decoder_mlp_dims))
    return shapes


# Where each official/timm key family lives in a mae-mm ``MaskedAutoencoder`` (encoder under
# ``backbone.``, decoder under ``neck.``), written out family by family. A key that no entry
# names is an error, not a guess.
MAE_MM_OF_FOREIGN = OrderedDict([
    ('cls_token', 'backbone.cls_token'),
    ('pos_embed', 'backbone.pos_embed'),
    ('patch_embed.proj.', 'backbone.patch_embed.proj.'),
    ('blocks.', 'backbone.blocks.'),
    ('norm.', 'backbone.norm.'),
    ('fc_norm.', 'backbone.fc_norm.'),
    ('decoder_embed.', 'neck.decoder_embed.'),
    ('mask_token', 'neck.mask_token'),
    ('decoder_pos_embed', 'neck.decoder_pos_embed'),
    ('decoder_blocks.', 'neck.decoder_blocks.'),
    ('decoder_norm.', 'neck.decoder_norm.'),
    ('decoder_pred.', 'neck.decoder_pred.'),
])


def mae_mm_name(foreign: str) -> str:
    """The mae-mm ``MaskedAutoencoder`` key holding the official / timm key ``foreign``."""
    if foreign in MAE_MM_OF_FOREIGN:
        return MAE_MM_OF_FOREIGN[foreign]
    for family, target in MAE_MM_OF_FOREIGN.items():
        if family.endswith('.') and foreign.startswith(family):
            return target + foreign[len(family):]
    raise KeyError(f'no hand-written mae-mm name for {foreign!r}')


def _fill(model_state: dict, names: List[str], shapes: Optional[dict]) -> 'OrderedDict':
    out = OrderedDict()
    for name in names:
        value = model_state[mae_mm_name(name)]
        if shapes is not None:
            assert tuple(value.shape) == shapes[name], (
                f'{name}: mae-mm {mae_mm_name(name)} has shape {tuple(value.shape)}, '
                f'the official layout {shapes[name]}')
        out[name] = value.detach().clone()
    return out


def official_state_dict(model, encoder_only: bool = False, num_layers: int = TINY['num_layers'],
                        depth: int = TINY['depth'], shapes: Optional[dict] = None) -> 'OrderedDict':
    """The official state dict (the names above, in ``models_mae.py``'s order) holding the
    weights of the mae-mm ``model`` (a ``MaskedAutoencoder`` or its ``state_dict()``), copied
    under :data:`MAE_MM_OF_FOREIGN`. ``shapes``: check every tensor against the official shape
    (``official_shapes(...)``); defaults to the tiny MAE's when ``num_layers``/``depth`` are the
    tiny ones."""
    state = model if isinstance(model, dict) else model.state_dict()
    names = official_encoder_names(num_layers) + ([] if encoder_only else
                                                  official_decoder_names(depth))
    if shapes is None and (num_layers, depth) == (TINY['num_layers'], TINY['depth']):
        shapes = official_shapes()
    return _fill(state, names, shapes)


def official_checkpoint(model, encoder_only: bool = False, **kwargs) -> dict:
    """An official file: ``{'model': ...}`` (``mae_visualize_*``; ``encoder_only``:
    ``mae_pretrain_*``)."""
    return {'model': official_state_dict(model, encoder_only=encoder_only, **kwargs)}


def timm_state_dict(model, num_layers: int = TINY['num_layers'],
                    shapes: Optional[dict] = None) -> 'OrderedDict':
    """What ``timm.create_model('vit_base_patch16_224.mae').state_dict()`` holds (a bare dict,
    token pool, no head), with the weights of the mae-mm ``model``'s encoder."""
    state = model if isinstance(model, dict) else model.state_dict()
    if shapes is None and num_layers == TINY['num_layers']:
        shapes = official_shapes()
    return _fill(state, timm_names(num_layers), shapes)
