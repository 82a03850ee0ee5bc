"""Self-attention on a 2-D token grid, global or in windows, with decomposed relative position.

This is the attention of ViTDet (Li et al., 2022), with the decomposed relative position bias of
MViTv2 (Li et al., 2022): the bias between a query at ``(y, x)`` and a key at ``(y', x')`` is
``q . R_h[y - y'] + q . R_w[x - x']``, with one learned table per axis. The module keeps the
parameter names of :class:`~mae_mm.models.layers.transformer.Attention` (``qkv``, ``proj``), so a
MAE checkpoint loads into it unchanged; the tables ``rel_pos_h``/``rel_pos_w`` are zero-initialised
(plain attention at the start) and absent from pretraining checkpoints.

Windows that overhang the grid are zero-padded (after the block's first LayerNorm) and, as in
ViTDet (detectron2's ``projects/ViTDet``, mmdet's port), the padded tokens take part as keys and
values: their key and value are the qkv projection's bias. ``mask_padded_keys=True`` (an mae-mm
option, not the reference) masks them out instead, so that an edge window equals attention
restricted to its image tokens; weights trained with the reference semantics do not reproduce
with it.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .transformer import Attention


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Cut a (N, H, W, C) grid into non-overlapping windows, zero-padding H and W up first.

    Args:
        x (Tensor): Tokens on their grid, (N, H, W, C).
        window_size (int): Window side.

    Returns:
        tuple: Windows (N * num_windows, window_size, window_size, C), ordered per image then
        row-major over the windows, and the padded grid (Hp, Wp).
    """
    n, h, w, c = x.shape
    pad_h, pad_w = (-h) % window_size, (-w) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(n, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)
    return windows, (hp, wp)


def window_unpartition(windows: torch.Tensor, window_size: int, padded_hw: Tuple[int, int],
                       hw: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: reassemble the grid and drop the padding.

    Args:
        windows (Tensor): (N * num_windows, window_size, window_size, C).
        window_size (int): Window side.
        padded_hw (tuple[int, int]): The padded grid (Hp, Wp).
        hw (tuple[int, int]): The original grid (H, W).

    Returns:
        Tensor: (N, H, W, C).
    """
    hp, wp = padded_hw
    rows, cols = hp // window_size, wp // window_size
    n = windows.shape[0] // (rows * cols)
    x = windows.view(n, rows, cols, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, hp, wp, -1)
    return x[:, :hw[0], :hw[1]].contiguous()


def relative_position_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pair embeddings ``out[i, j] = table[i - j + size - 1]`` for one axis of ``size``.

    A table learned for another size (``table.shape[0] != 2 * size - 1``, e.g. a global block
    run on a larger image) is first resampled linearly along the offsets.

    Args:
        table (Tensor): (2 * S - 1, C) embeddings of the offsets -(S-1) .. S-1.
        size (int): Number of positions along the axis.

    Returns:
        Tensor: (size, size, C).
    """
    length = 2 * size - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t().unsqueeze(0), size=length, mode='linear',
                              align_corners=False).squeeze(0).t()
    coords = torch.arange(size, device=table.device)
    offsets = coords[:, None] - coords[None, :] + size - 1
    return table[offsets]


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            grid: Tuple[int, int]) -> torch.Tensor:
    """The additive attention bias ``q . R_h[y - y'] + q . R_w[x - x']`` for every token pair.

    Args:
        q (Tensor): Queries (B, heads, H*W, head_dim), row-major over the grid, unscaled.
        rel_pos_h (Tensor): (2 * S_h - 1, head_dim) table of the row offsets.
        rel_pos_w (Tensor): (2 * S_w - 1, head_dim) table of the column offsets.
        grid (tuple[int, int]): (H, W).

    Returns:
        Tensor: (B, heads, H*W, H*W), to add to the scaled attention logits.
    """
    h, w = grid
    b, heads, _, dim = q.shape
    r_h = relative_position_table(rel_pos_h, h).to(q.dtype)  # (H, H, C)
    r_w = relative_position_table(rel_pos_w, w).to(q.dtype)  # (W, W, C)
    q = q.reshape(b, heads, h, w, dim)
    bias_h = torch.einsum('bnyxc,ykc->bnyxk', q, r_h)  # (B, heads, H, W, H')
    bias_w = torch.einsum('bnyxc,xkc->bnyxk', q, r_w)  # (B, heads, H, W, W')
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, heads, H, W, H', W')
    return bias.reshape(b, heads, h * w, h * w)


class WindowRelPosAttention(Attention):
    """Multi-head self-attention on a (N, H, W, C) grid: global, or per ``window_size`` window,
    with optional decomposed relative position bias.

    Args:
        dim (int): Token width.
        num_heads (int): Heads; ``dim`` must be divisible by it.
        qkv_bias (bool): Bias on the qkv projection.
        window_size (int): Window side; 0 attends over the whole grid.
        use_rel_pos (bool): Add the decomposed relative position bias.
        rel_pos_grid (tuple[int, int]): The grid the tables of a global block are sized for (the
            training grid); other grids resample them. Window blocks size them to the window.
        mask_padded_keys (bool): Mask the zero-padded tokens of windows that overhang the grid
            out as keys. Defaults to False: they take part, as in the ViTDet reference.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, window_size: int = 0,
                 use_rel_pos: bool = False, rel_pos_grid: Tuple[int, int] = (14, 14),
                 mask_padded_keys: bool = False):
        super().__init__(dim, num_heads, qkv_bias)
        if window_size < 0:
            raise ValueError(f'window_size={window_size} must be >= 0 (0: global attention)')
        self.window_size = window_size
        self.use_rel_pos = use_rel_pos
        self.mask_padded_keys = mask_padded_keys
        if use_rel_pos:
            rows, cols = (window_size, window_size) if window_size else tuple(rel_pos_grid)
            head_dim = dim // num_heads
            # Zero: the block starts as the pretrained plain attention.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * rows - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * cols - 1, head_dim))

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend over the grid (or its windows).

        Args:
            x (Tensor): (N, H, W, C) tokens on their grid.
            attn_bias (Tensor, optional): Not supported (kept for the signature of
                :class:`Attention`); must be None.

        Returns:
            Tensor: (N, H, W, C).
        """
        if x.ndim != 4:
            raise ValueError(f'{type(self).__name__} takes tokens on their grid (N, H, W, C), '
                             f'got shape {tuple(x.shape)}')
        if attn_bias is not None:
            raise ValueError(f'{type(self).__name__} builds its own attention bias; '
                             'attn_bias must be None')
        if not self.window_size:
            return self._attend(x, key_padding=None)
        h, w = x.shape[1:3]
        windows, padded_hw = window_partition(x, self.window_size)
        key_padding = None
        if self.mask_padded_keys and padded_hw != (h, w):
            image = x.new_ones(1, h, w, 1)
            key_padding = window_partition(image, self.window_size)[0].reshape(
                -1, self.window_size**2) == 0  # (num_windows, ws*ws), True = padding
            key_padding = key_padding.repeat(x.shape[0], 1)
        out = self._attend(windows, key_padding)
        return window_unpartition(out, self.window_size, padded_hw, (h, w))

    def _attend(self, x: torch.Tensor, key_padding: Optional[torch.Tensor]) -> torch.Tensor:
        """Attention among all tokens of each (B, h, w, C) grid; ``key_padding`` (B, h*w) marks
        keys to ignore."""
        b, h, w, dim = x.shape
        length = h * w
        qkv = self.qkv(x.reshape(b, length, dim))
        qkv = qkv.reshape(b, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, head_dim)
        bias = None
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        if key_padding is not None:
            mask = torch.zeros(key_padding.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill(key_padding, float('-inf'))[:, None, None, :]
            bias = mask if bias is None else bias + mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, dim))

    def extra_repr(self) -> str:
        return (f'num_heads={self.num_heads}, window_size={self.window_size}, '
                f'use_rel_pos={self.use_rel_pos}, mask_padded_keys={self.mask_padded_keys}')
