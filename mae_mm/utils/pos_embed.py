"""Fixed 2-D sine-cosine position embeddings, and their resizing.

One function builds the table for every module (encoder, decoder, downstream backbones), in the
orientation of the official MAE code (facebookresearch/mae ``util/pos_embed.py``): the first half
of the channels encodes the *column* (x) index, the second half the *row* (y) index, and tokens are
ordered row-major. mmpretrain's table is the transpose of this one; checkpoints made by either are
only interchangeable when the table is loaded, not regenerated.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000 ** (-k / (D/2))``.

    Args:
        embed_dim (int): Output width D (even).
        positions (Tensor): Positions, any shape; flattened to (M,).

    Returns:
        Tensor: (M, D) float64.
    """
    if embed_dim % 2:
        raise ValueError(f'sin-cos embedding width must be even, got {embed_dim}')
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None]  # (M, D/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d_position_embedding(grid_size: Tuple[int, int],
                                 embed_dim: int,
                                 num_extra_tokens: int = 1) -> torch.Tensor:
    """The MAE position table for a ``grid_size = (rows, cols)`` patch grid.

    Args:
        grid_size (tuple[int, int]): Patch grid (H/p, W/p); rectangular grids are fine.
        embed_dim (int): Channel width, divisible by 4.
        num_extra_tokens (int): Leading all-zero rows (the cls token's position).

    Returns:
        Tensor: (1, num_extra_tokens + rows * cols, embed_dim) float32.
    """
    if embed_dim % 4:
        raise ValueError(f'2-D sin-cos embedding width must be divisible by 4, got {embed_dim}')
    rows, cols = grid_size
    row_idx, col_idx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing='ij')
    emb = torch.cat([sincos_1d(embed_dim // 2, col_idx), sincos_1d(embed_dim // 2, row_idx)], 1)
    emb = torch.cat([torch.zeros(num_extra_tokens, embed_dim, dtype=emb.dtype), emb], 0)
    return emb.float().unsqueeze(0)


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_grid: Tuple[int, int],
                     dst_grid: Tuple[int, int],
                     num_extra_tokens: int = 1,
                     mode: str = 'bicubic') -> torch.Tensor:
    """Resample a (1, extra + H*W, C) table on its 2-D grid; extra tokens are kept as they are.

    Args:
        pos_embed (Tensor): The table, tokens row-major.
        src_grid (tuple[int, int]): Its grid (rows, cols).
        dst_grid (tuple[int, int]): The wanted grid.
        num_extra_tokens (int): Leading tokens not on the grid (cls).
        mode (str): Interpolation mode of :func:`torch.nn.functional.interpolate`.

    Returns:
        Tensor: (1, extra + rows' * cols', C), same dtype; the input itself when sizes agree.
    """
    src_grid, dst_grid = tuple(src_grid), tuple(dst_grid)
    if src_grid == dst_grid:
        return pos_embed
    num_grid = pos_embed.shape[1] - num_extra_tokens
    if num_grid != src_grid[0] * src_grid[1]:
        raise ValueError(f'position embedding has {num_grid} grid tokens, which does not match '
                         f'the source grid {src_grid}')
    extra, grid = pos_embed[:, :num_extra_tokens], pos_embed[:, num_extra_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, *src_grid, dim).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=dst_grid, mode=mode, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, dst_grid[0] * dst_grid[1], dim)
    return torch.cat([extra, grid.to(pos_embed.dtype)], dim=1)
