"""BEiT's relative position bias: a learned per-head bias on the attention logits, one entry per
2-D offset between two patches of a fixed grid, plus three for the cls token (cls -> patch,
patch -> cls, cls -> cls). The MAE paper's segmentation transfer turns it on for fine-tuning
only, initialised to zero (pretraining checkpoints have no table).

Parameter names follow BEiT and mmseg (``attn.relative_position_bias_table``, shape
``((2 Wh - 1)(2 Ww - 1) + 3, num_heads)``).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transformer import Attention


def relative_position_index(grid_size: Tuple[int, int]) -> torch.Tensor:
    """(1 + Wh Ww, 1 + Wh Ww) indices into the table, for the cls token followed by the patches
    in row-major order: patch pair (i, j) uses the offset ``coord(i) - coord(j)``; row 0 (the
    cls token as query) uses entry ``T - 3``, column 0 (the cls token as key) ``T - 2``, the
    cls-cls pair ``T - 1``, where ``T = (2 Wh - 1)(2 Ww - 1) + 3``."""
    height, width = grid_size
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing='ij')
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, Wh Ww)
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, Wh Ww, Wh Ww)
    patch_index = (offsets[0] + height - 1) * (2 * width - 1) + (offsets[1] + width - 1)
    num_entries = (2 * height - 1) * (2 * width - 1) + 3
    index = torch.zeros((height * width + 1, ) * 2, dtype=torch.long)
    index[1:, 1:] = patch_index
    index[0, :] = num_entries - 3
    index[:, 0] = num_entries - 2
    index[0, 0] = num_entries - 1
    return index


class RelPosBiasAttention(Attention):
    """Global attention with BEiT's relative position bias over a fixed ``grid_size`` and a
    leading cls token: ``softmax(q k^T / sqrt(d) + B[index]) v``.

    The table is zero-initialised, so the module starts as the plain :class:`Attention`. It only
    applies to 1 + Wh Ww tokens (the grid it was built for); other token counts (masked
    pretraining, another input size) are an error: BEiT and mmseg resize the table when loading
    a checkpoint of another grid, not per input.

    Args:
        dim (int): Token width.
        num_heads (int): Heads.
        qkv_bias (bool): Bias on qkv.
        grid_size (tuple[int, int]): Patch grid (Wh, Ww) of the inputs.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, grid_size: Tuple[int, int]):
        super().__init__(dim, num_heads, qkv_bias)
        self.grid_size = tuple(grid_size)
        height, width = self.grid_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * height - 1) * (2 * width - 1) + 3, num_heads))
        # Derived from grid_size: not saved, so checkpoints carry only the table.
        self.register_buffer('relative_position_index', relative_position_index(self.grid_size),
                             persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, 1 + Wh Ww, 1 + Wh Ww) bias of the logits."""
        length = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(length, length, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 + Wh Ww, C) -> (N, 1 + Wh Ww, C)."""
        n, length, dim = x.shape
        expected = self.relative_position_index.shape[0]
        if length != expected:
            raise ValueError(
                f'relative position bias table is for a {self.grid_size[0]} x '
                f'{self.grid_size[1]} grid plus the cls token ({expected} tokens), got {length} '
                'tokens: feed inputs of model.backbone.img_size (it applies unmasked only)')
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias().unsqueeze(0).to(q.dtype)  # (1, heads, L, L)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(n, length, dim))

    def extra_repr(self) -> str:
        return f'grid_size={self.grid_size}, num_heads={self.num_heads}'
