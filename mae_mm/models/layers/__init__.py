from mae_mm.utils.pos_embed import resize_pos_embed, sincos_1d, sincos_2d_position_embedding
from .mask_noise import MASK_STRATEGIES, NOISE_FUNCTIONS, check_mask_config
from .masking import gather_tokens, num_visible, random_masking
from .patch_embed import PatchEmbed
from .patchify import patchify, unpatchify
from .relative_position_bias import RelPosBiasAttention, relative_position_index
from .transformer import Attention, Block, DropPath, Mlp, init_mae_weights, layer_norm_eps

__all__ = [
    'MASK_STRATEGIES', 'NOISE_FUNCTIONS', 'check_mask_config', 'gather_tokens', 'num_visible',
    'random_masking', 'PatchEmbed', 'patchify', 'unpatchify', 'resize_pos_embed', 'sincos_1d',
    'sincos_2d_position_embedding', 'Attention', 'Block', 'DropPath', 'Mlp', 'init_mae_weights',
    'layer_norm_eps', 'RelPosBiasAttention', 'relative_position_index'
]
