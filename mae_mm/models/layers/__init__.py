from .masking import (MASK_STRATEGIES, NOISE_FUNCTIONS, check_mask_config, keep_lowest_noise,
                      num_visible)
from .patchify import patchify, unpatchify
from mae_mm.utils.pos_embed import resize_pos_embed, sincos_1d, sincos_2d_position_embedding
from .transformer import Attention, Block, DropPath, Mlp, init_mae_weights

__all__ = [
    'MASK_STRATEGIES', 'NOISE_FUNCTIONS', 'check_mask_config', 'keep_lowest_noise',
    'num_visible', 'patchify', 'unpatchify', 'resize_pos_embed', 'sincos_1d',
    'sincos_2d_position_embedding', 'Attention', 'Block', 'DropPath', 'Mlp', 'init_mae_weights'
]
