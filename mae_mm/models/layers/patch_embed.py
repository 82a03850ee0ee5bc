"""Patch embedding: non-overlapping p x p patches -> tokens, by a strided convolution."""
from typing import Tuple

import torch
import torch.nn as nn


class PatchEmbed(nn.Module):
    """The official ``PatchEmbed`` (conv ``proj``), for any input size divisible by the patch.

    Args:
        patch_size (int): Patch side p.
        in_channels (int): Image channels.
        embed_dims (int): Token width.
    """

    def __init__(self, patch_size: int, in_channels: int, embed_dims: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)

    def grid(self, x: torch.Tensor) -> Tuple[int, int]:
        """The patch grid (H/p, W/p) of images ``x``; one-line error when not divisible."""
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f'input size {h}x{w} is not divisible by patch_size '
                             f'{self.patch_size}: resize or crop the images to a multiple')
        return h // self.patch_size, w // self.patch_size

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(N, C, H, W) -> tokens (N, H/p * W/p, D), row-major, and the grid (H/p, W/p)."""
        grid = self.grid(x)
        return self.proj(x).flatten(2).transpose(1, 2), grid
