"""A :class:`MaskedAutoencoder` ready to reconstruct, from any full MAE checkpoint.

Where the model's settings come from, in this order:

1. an explicit config (any mae-mm pretraining config, e.g. ``configs/mae/...``);
2. the config that MMEngine stores in every checkpoint a Runner writes (``meta['cfg']``), so
   mae-mm training checkpoints need nothing else;
3. the weights' shapes, for files without a config (official ``mae_visualize_vit_*.pth``,
   converted or bare state dicts): widths, depths, patch size, image size, ``qkv_bias`` and the
   mask-token ablation are read off the tensors. Head counts have no weights of their own:
   encoders take the standard ViT count (``MaskedViT``'s arch table, else width / 64) and
   decoders width / 32 (the official 512-wide decoder has 16). ``norm_pix`` has no weights
   either: it defaults to False, as the official visualization checkpoints predict raw pixels.
"""
import re
from typing import Mapping, Optional, Tuple, Union

import torch
from mmengine.config import Config

from mae_mm.utils.checkpoint import convert_state_dict, detect_format, unwrap_state_dict
from mae_mm.utils.compat import load_checkpoint_file

#: The official demo's preprocessing: ImageNet mean/std on 0-255 RGB.
IMAGENET_PREPROCESSOR = dict(type='mmpretrain.SelfSupDataPreprocessor',
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
        model_cfg = infer_mae_model_config(converted, norm_pix=bool(norm_pix))
        return model_cfg, f'inferred from the weights ({detect_format(checkpoint)} format)'
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


def build_mae_from_checkpoint(checkpoint: Union[str, Mapping],
                              config: Union[str, Config, None] = None,
                              norm_pix: Optional[bool] = None,
                              device: Union[str, torch.device] = 'cpu'):
    """Build a :class:`MaskedAutoencoder` for ``checkpoint`` and load its weights strictly.

    Args:
        checkpoint (str | Mapping): A file (read with the safe loader) or a loaded checkpoint,
            in mae-mm, official (``{'model': ...}``), timm-with-decoder or mmpretrain format.
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
    name = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
    if isinstance(checkpoint, str):
        checkpoint = load_checkpoint_file(checkpoint, map_location='cpu')
    model_cfg, source = _model_config(config, checkpoint, norm_pix)
    with DefaultScope.overwrite_default_scope('mae_mm'):
        model = MODELS.build(model_cfg)
    state, _ = unwrap_state_dict(checkpoint)
    # The model's load_state_dict pre-hook rewrites official/timm/mmpretrain keys to mae-mm's.
    try:
        load_state_dict(model, dict(state), strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ValueError(f'{name} does not fit the model from {source}: '
                         f'{"; ".join(lines)[:600]} (pass the training config with --config)') \
            from None
    return model.to(device).eval(), source
