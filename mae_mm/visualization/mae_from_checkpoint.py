"""A :class:`MaskedAutoencoder` ready to reconstruct, from any full MAE checkpoint.

Where the model's settings come from, in this order:

1. an explicit config (any mae-mm pretraining config, e.g. ``configs/mae/...``);
2. the config that MMEngine stores in every checkpoint a Runner writes (``meta['cfg']``), so
   mae-mm training checkpoints need nothing else;
3. a Hugging Face ``config.json`` beside the weights (a ``ViTMAEForPreTraining`` folder, its
   ``model.safetensors`` / ``pytorch_model.bin``, or a file converted from one, which keeps the
   config in ``meta['hf_config']``): heads, ``layer_norm_eps`` (every LayerNorm of the model gets
   it: 1e-12 in ``facebook/vit-mae-*``), ``mask_ratio``, ``norm_pix_loss``, image size; sizes
   come from the weights and must agree with it;
4. the weights' shapes, for files without a config (official ``mae_visualize_vit_*.pth``,
   converted or bare state dicts): widths, depths, patch size, image size, ``qkv_bias`` and the
   mask-token ablation are read off the tensors. Head counts have no weights of their own:
   encoders take the standard ViT count (``MaskedViT``'s arch table, else width / 64) and
   decoders width / 32 (the official 512-wide decoder has 16). ``norm_pix`` has no weights
   either: it defaults to False, as the official visualization checkpoints predict raw pixels.
   Hugging Face weights without ``config.json`` get transformers' ``ViTMAEConfig`` defaults
   (LayerNorm eps 1e-12).
"""
import os
import re
from collections import OrderedDict
from typing import Mapping, Optional, Tuple, Union

import torch
from mmengine.config import Config

from mae_mm.utils.checkpoint import (HF_DEFAULT_LAYER_NORM_EPS, convert_state_dict, detect_format,
                                     hf_config_of, read_checkpoint, unwrap_state_dict)
from mae_mm.utils.checkpoint.hf import METADATA_KEY

#: The official demo's preprocessing: ImageNet mean/std on 0-255 RGB.
IMAGENET_PREPROCESSOR = dict(type='mae_mm.MAEDataPreprocessor',
                             mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                             to_rgb=True)


def _count_blocks(keys, prefix: str) -> int:
    regex = re.compile(re.escape(prefix) + r'(\d+)\.')
    found = {int(m.group(1)) for m in map(regex.match, keys) if m}
    return max(found) + 1 if found else 0


def _encoder_heads(embed_dims: int, num_layers: int, feedforward: int) -> int:
    from mae_mm.models.backbones.masked_vit import ARCH_ZOO
    for arch in ARCH_ZOO.values():
        if (arch['embed_dims'], arch['num_layers'],
                arch['feedforward_channels']) == (embed_dims, num_layers, feedforward):
            return arch['num_heads']
    return max(1, embed_dims // 64)


def infer_mae_model_config(state_dict: Mapping[str, torch.Tensor],
                           norm_pix: bool = False) -> dict:
    """A ``MaskedAutoencoder`` config matching a mae-mm-format state dict.

    Args:
        state_dict (Mapping): Keys ``backbone.*`` and ``neck.*`` (see
            :func:`mae_mm.utils.checkpoint.convert_state_dict`).
        norm_pix (bool): The head's ``norm_pix`` (not stored in weights).

    Returns:
        dict: The model config (ImageNet preprocessing, as the official demo).

    Raises:
        ValueError: The state dict has no decoder, or a non-square position table.
    """
    keys = list(state_dict)
    if not any(k.startswith('neck.decoder_pred.') for k in keys):
        raise ValueError('the checkpoint has no MAE decoder (neck.decoder_* / decoder_* keys): '
                         'reconstruction needs a full pretraining checkpoint, e.g. the official '
                         'mae_visualize_vit_large.pth or a mae-mm pretraining checkpoint')
    embed_dims, in_channels, patch, _ = state_dict['backbone.patch_embed.proj.weight'].shape
    grid_tokens = state_dict['backbone.pos_embed'].shape[1] - 1
    side = int(round(grid_tokens**0.5))
    if side * side != grid_tokens:
        raise ValueError(f'backbone.pos_embed has {grid_tokens} patch positions, not a square '
                         'grid: the image size cannot be inferred, pass the training config '
                         '(--config)')
    num_layers = _count_blocks(keys, 'backbone.blocks.')
    feedforward = state_dict['backbone.blocks.0.mlp.fc1.weight'].shape[0]
    decoder_dims = state_dict['neck.decoder_embed.weight'].shape[0]
    decoder_ff = state_dict['neck.decoder_blocks.0.mlp.fc1.weight'].shape[0]
    return dict(
        type='MaskedAutoencoder',
        data_preprocessor=dict(IMAGENET_PREPROCESSOR),
        backbone=dict(
            type='MaskedViT',
            arch=dict(embed_dims=embed_dims, num_layers=num_layers,
                      num_heads=_encoder_heads(embed_dims, num_layers, feedforward),
                      feedforward_channels=feedforward),
            img_size=side * patch, patch_size=patch, in_channels=in_channels,
            qkv_bias='backbone.blocks.0.attn.qkv.bias' in state_dict,
            mask_token_in_encoder='backbone.mask_token' in state_dict),
        neck=dict(type='MAEDecoder', decoder_embed_dim=decoder_dims,
                  decoder_depth=_count_blocks(keys, 'neck.decoder_blocks.'),
                  decoder_num_heads=max(1, decoder_dims // 32),
                  mlp_ratio=decoder_ff / decoder_dims),
        head=dict(type='PixelReconstructionHead', norm_pix=norm_pix))


def _hf_size(value, name: str) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int)
                                                                    for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f'config.json: {name}={value!r} is neither an int nor [height, width]')


def mae_model_config_from_hf(hf_config: Optional[Mapping], state_dict: Mapping[str, torch.Tensor],
                             norm_pix: Optional[bool] = None,
                             preprocessor: Optional[Mapping] = None) -> dict:
    """A ``MaskedAutoencoder`` config for a Hugging Face ViTMAE checkpoint.

    Sizes come from the weights (``state_dict`` in mae-mm names) and are checked against the
    config; heads, ``layer_norm_eps`` (for every LayerNorm: ``backbone.norm_eps`` and
    ``neck.norm_eps``), ``mask_ratio``, ``norm_pix_loss`` and the image size from the config
    (transformers' ``ViTMAEConfig`` defaults for fields it lacks, or for no config at all).
    ``preprocessor_config.json``'s ``image_mean``/``image_std`` (0-1 scale) become the data
    preprocessor's mean/std (0-255), else ImageNet's.

    Raises:
        ValueError: An activation other than exact GELU, or a config that disagrees with the
            weights (one line naming the field).
    """
    config = dict(hf_config or {})
    model_cfg = infer_mae_model_config(state_dict, norm_pix=False)
    backbone, neck = model_cfg['backbone'], model_cfg['neck']
    arch = backbone['arch']
    act = config.get('hidden_act', 'gelu')
    if act != 'gelu':
        raise ValueError(f'config.json: hidden_act={act!r}; the blocks of mae-mm use exact GELU '
                         '("gelu"), so this model cannot be reproduced')
    weights = {'hidden_size': arch['embed_dims'], 'num_hidden_layers': arch['num_layers'],
               'intermediate_size': arch['feedforward_channels'],
               'decoder_hidden_size': neck['decoder_embed_dim'],
               'decoder_num_hidden_layers': neck['decoder_depth'],
               'decoder_intermediate_size': round(neck['mlp_ratio'] * neck['decoder_embed_dim']),
               'patch_size': backbone['patch_size'], 'num_channels': backbone['in_channels']}
    for field, value in weights.items():
        given = config.get(field)
        if given is not None and (_hf_size(given, field)[0] if field == 'patch_size'
                                  else given) != value:
            raise ValueError(f'config.json: {field}={given!r} but the weights have {value}: '
                             'the config belongs to another model')
    if 'patch_size' in config and len(set(_hf_size(config['patch_size'], 'patch_size'))) != 1:
        raise ValueError(f'config.json: patch_size={config["patch_size"]!r}; mae-mm takes square '
                         'patches only')
    if 'image_size' in config:
        height, width = _hf_size(config['image_size'], 'image_size')
        grid = (height // backbone['patch_size'], width // backbone['patch_size'])
        tokens = state_dict['backbone.pos_embed'].shape[1] - 1
        if grid[0] * grid[1] != tokens:
            raise ValueError(f'config.json: image_size={config["image_size"]!r} gives '
                             f'{grid[0] * grid[1]} patches but the position table has {tokens}')
        backbone['img_size'] = (height, width) if height != width else height
    eps = float(config.get('layer_norm_eps', HF_DEFAULT_LAYER_NORM_EPS))
    if config.get('num_attention_heads') is not None:
        arch['num_heads'] = int(config['num_attention_heads'])
    backbone.update(norm_eps=eps, mask_ratio=float(config.get('mask_ratio', 0.75)))
    neck.update(norm_eps=eps,
                decoder_num_heads=int(config.get('decoder_num_attention_heads', 16)))
    if norm_pix is None:
        norm_pix = bool(config.get('norm_pix_loss', False))
    model_cfg['head'] = dict(model_cfg['head'], norm_pix=norm_pix)
    if preprocessor and preprocessor.get('image_mean') and preprocessor.get('image_std') \
            and preprocessor.get('do_normalize', True):
        model_cfg['data_preprocessor'] = dict(
            IMAGENET_PREPROCESSOR, mean=[round(255. * v, 6) for v in preprocessor['image_mean']],
            std=[round(255. * v, 6) for v in preprocessor['image_std']])
    return model_cfg


def hf_preprocessor_config_from_model(model) -> Optional[dict]:
    """``preprocessor_config.json`` (transformers' ``ViTImageProcessor``) with the model's
    normalisation (0-1 scale) and training size; None when the model does not normalise."""
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean, std = getattr(preprocessor, 'mean', None), getattr(preprocessor, 'std', None)
    if mean is None or std is None:
        return None
    height, width = model.backbone.img_size
    return {'image_processor_type': 'ViTImageProcessor', 'do_resize': True,
            'size': {'height': height, 'width': width}, 'resample': 3,  # PIL bicubic
            'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
            'image_mean': [v / 255. for v in mean.flatten().tolist()],
            'image_std': [v / 255. for v in std.flatten().tolist()]}


def hf_config_from_model(model) -> dict:
    """The ``config.json`` of transformers' ``ViTMAEForPreTraining`` for a built
    :class:`MaskedAutoencoder` (what ``tools/model_converters/mae_mm_to_hf.py`` writes).

    Raises:
        ValueError: Something ViTMAE cannot express (one line): encoder and decoder with different
            LayerNorm eps, a mask token in the encoder, non-square patches.
    """
    backbone, neck, head = model.backbone, model.neck, model.head
    norms = [m.eps for m in (*backbone.modules(), *neck.modules())
             if isinstance(m, torch.nn.LayerNorm)]
    if len(set(norms)) != 1:
        raise ValueError(f'the LayerNorms of the model have several eps {sorted(set(norms))}: '
                         'ViTMAE has one layer_norm_eps')
    if getattr(backbone, 'mask_token', None) is not None:
        raise ValueError('the mask-token-in-encoder ablation has no ViTMAE counterpart')
    block, dblock = backbone.blocks[0], neck.decoder_blocks[0]
    height, width = backbone.img_size
    return {
        'architectures': ['ViTMAEForPreTraining'],
        'model_type': 'vit_mae',
        'hidden_size': backbone.embed_dims,
        'num_hidden_layers': backbone.num_layers,
        'num_attention_heads': block.attn.num_heads,
        'intermediate_size': block.mlp.fc1.out_features,
        'hidden_act': 'gelu',
        'hidden_dropout_prob': 0.0,
        'attention_probs_dropout_prob': 0.0,
        'initializer_range': 0.02,
        'layer_norm_eps': norms[0],
        'image_size': height if height == width else [height, width],
        'patch_size': backbone.patch_size,
        'num_channels': backbone.in_channels,
        'qkv_bias': block.attn.qkv.bias is not None,
        'decoder_num_attention_heads': dblock.attn.num_heads,
        'decoder_hidden_size': neck.decoder_embed.out_features,
        'decoder_num_hidden_layers': len(neck.decoder_blocks),
        'decoder_intermediate_size': dblock.mlp.fc1.out_features,
        'mask_ratio': backbone.mask_ratio,
        'norm_pix_loss': bool(head.norm_pix),
    }


def stored_config(checkpoint: Mapping) -> Optional[Config]:
    """The config MMEngine's Runner saved in the checkpoint (``meta['cfg']``), if any."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    text = meta.get('cfg') if isinstance(meta, Mapping) else None
    if not isinstance(text, str) or 'model' not in text:
        return None
    return Config.fromstring(text, file_format='.py')


def _model_config(config: Union[str, Config, None], checkpoint: Mapping,
                  norm_pix: Optional[bool]) -> Tuple[dict, str]:
    if isinstance(config, str):
        config, source = Config.fromfile(config), f'config {config}'
    elif config is not None:
        source = 'the given config'
    else:
        config, source = stored_config(checkpoint), 'the config stored in the checkpoint'
    if config is None:
        converted = convert_state_dict(checkpoint, 'mae_mm').state_dict
        fmt = detect_format(checkpoint)
        hf_config = hf_config_of(checkpoint)
        if hf_config is not None or fmt == 'hf':
            meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
            preprocessor = meta.get('hf_preprocessor') if isinstance(meta, Mapping) else None
            model_cfg = mae_model_config_from_hf(hf_config, converted, norm_pix, preprocessor)
            if hf_config is None:
                return model_cfg, ('inferred from the weights (hf format, no config.json: '
                                   "transformers' ViTMAEConfig defaults, LayerNorm eps "
                                   f'{HF_DEFAULT_LAYER_NORM_EPS:g})')
            return model_cfg, ('the Hugging Face config.json (LayerNorm eps '
                               f'{model_cfg["backbone"]["norm_eps"]:g}) and the weights')
        model_cfg = infer_mae_model_config(converted, norm_pix=bool(norm_pix))
        return model_cfg, f'inferred from the weights ({fmt} format)'
    model_cfg = config.get('model')
    model_type = str(model_cfg.get('type', '')) if model_cfg else ''
    if model_type.split('.')[-1] != 'MaskedAutoencoder':
        raise ValueError(f'{source} describes a {model_type or "missing"} model, not a '
                         'MaskedAutoencoder: give a pretraining checkpoint/config (with decoder)')
    model_cfg = model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else dict(model_cfg)
    model_cfg.pop('init_cfg', None)  # the checkpoint's weights are loaded below
    model_cfg['backbone'].pop('init_cfg', None)
    if norm_pix is not None:
        model_cfg['head'] = dict(model_cfg['head'], norm_pix=norm_pix)
    return model_cfg, source


def build_mae_from_checkpoint(checkpoint: Union[str, os.PathLike, Mapping],
                              config: Union[str, Config, None] = None,
                              norm_pix: Optional[bool] = None,
                              device: Union[str, torch.device] = 'cpu'):
    """Build a :class:`MaskedAutoencoder` for ``checkpoint`` and load its weights strictly.

    Args:
        checkpoint (str | PathLike | Mapping): A file (read with the safe loader), a Hugging
            Face model folder, or a loaded checkpoint, in mae-mm, official
            (``{'model': ...}``), timm-with-decoder, mmpretrain or Hugging Face ViTMAE format.
        config (str | Config, optional): A config whose ``model`` is the checkpoint's. Default:
            the config stored in the checkpoint, else one inferred from the weights.
        norm_pix (bool, optional): Override the head's ``norm_pix`` (weights do not record it).
        device (str | torch.device): Where the model runs.

    Returns:
        tuple: ``(model, description)``: the model in eval mode and a line saying where its
        settings came from.

    Raises:
        ValueError: No decoder in the checkpoint, a non-MAE config, or keys/shapes that do not
            match the config (one line naming the keys).
    """
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_state_dict

    from mae_mm.registry import MODELS
    name = os.fspath(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else 'checkpoint'
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint, map_location='cpu')
    model_cfg, source = _model_config(config, checkpoint, norm_pix)
    with DefaultScope.overwrite_default_scope('mae_mm'):
        model = MODELS.build(model_cfg)
    state, _ = unwrap_state_dict(checkpoint)
    # The model's load_state_dict pre-hook rewrites official/timm/mmpretrain/Hugging Face keys to
    # mae-mm's; a Hugging Face config.json rides along for its LayerNorm eps check.
    to_load = OrderedDict(state)
    hf_config = hf_config_of(checkpoint)
    if hf_config is not None:
        to_load._metadata = OrderedDict([('', {METADATA_KEY: hf_config})])
    try:
        load_state_dict(model, to_load, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ValueError(f'{name} does not fit the model from {source}: '
                         f'{"; ".join(lines)[:600]} (pass the training config with --config)') \
            from None
    return model.to(device).eval(), source
