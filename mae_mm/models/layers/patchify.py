"""The patch layout of reconstruction targets: one function each way, used everywhere.

A patch is flattened in (row-in-patch, col-in-patch, channel) order, as in the official MAE
``patchify`` (``'nchpwq->nhwpqc'``), so official decoders' predictions line up. Rectangular
images are supported (the official code asserts H == W).
"""
from typing import Tuple

import torch


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, H/p * W/p, p*p*C)."""
    n, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f'image size {h}x{w} is not divisible by patch_size {p}')
    x = imgs.reshape(n, c, h // p, p, w // p, p)
    x = torch.einsum('nchpwq->nhwpqc', x)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_size: Tuple[int, int],
               in_channels: int = 3) -> torch.Tensor:
    """(N, rows*cols, p*p*C) -> (N, C, rows*p, cols*p); the inverse of :func:`patchify`."""
    n = patches.shape[0]
    p, (rows, cols) = patch_size, grid_size
    x = patches.reshape(n, rows, cols, p, p, in_channels)
    x = torch.einsum('nhwpqc->nchpwq', x)
    return x.reshape(n, in_channels, rows * p, cols * p)
