"""Which patches are masked: one per-patch *noise* score per strategy.

The ``len_keep`` patches with the lowest noise are visible (:func:`.masking.random_masking`).
That one mechanism serves all strategies, keeps exactly ``len_keep`` patches per sample (so
visible tokens batch densely), and lets a caller pass its own ``noise`` to reproduce a mask.

- ``random``: uniform noise (the paper's default).
- ``block``: BEiT-style rectangular blocks are masked first (paper Fig. 6, middle).
- ``grid``: one patch of every s x s cell is kept, ratio ``1 - 1/s**2`` (paper Fig. 6, right).
"""
import math
from typing import Tuple

import torch

from .masking import num_visible

MASK_STRATEGIES = ('random', 'block', 'grid')


def check_mask_config(strategy: str, mask_ratio: float, grid_size: Tuple[int, int],
                      min_block_patches: int = 16) -> None:
    """Raise a one-line ``ValueError`` for a strategy/ratio/grid that cannot work."""
    if strategy not in MASK_STRATEGIES:
        raise ValueError(f'mask_strategy={strategy!r} is unknown: use one of {MASK_STRATEGIES}')
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f'mask_ratio={mask_ratio} is outside [0, 1): set backbone.mask_ratio '
                         'to e.g. 0.75 (0 disables masking)')
    rows, cols = grid_size
    num_patches = rows * cols
    if mask_ratio > 0 and num_visible(num_patches, mask_ratio) < 1:
        raise ValueError(f'mask_ratio={mask_ratio} keeps no patch of {num_patches}: lower it')
    if strategy == 'grid' and mask_ratio > 0:
        stride = grid_stride(mask_ratio)
        if stride is None:
            raise ValueError(f"mask_strategy='grid' cannot reach mask_ratio={mask_ratio}: it "
                             'keeps one patch per s x s cell, so the ratio must be 1 - 1/s**2 '
                             '(0.75, 0.8889, 0.9375, ...)')
        if rows % stride or cols % stride:
            raise ValueError(f"mask_strategy='grid' with mask_ratio={mask_ratio} needs a patch "
                             f'grid divisible by {stride}, got {rows}x{cols}: change img_size')
    if strategy == 'block' and mask_ratio > 0:
        num_masked = num_patches - num_visible(num_patches, mask_ratio)
        if num_masked < min_block_patches:
            raise ValueError(f"mask_strategy='block' cannot reach mask_ratio={mask_ratio}: it "
                             f'masks {num_masked} patches, fewer than one block '
                             f'(min_block_patches={min_block_patches}); lower min_block_patches')


def grid_stride(mask_ratio: float) -> int:
    """``s`` with ``1 - 1/s**2 == mask_ratio``, or None when no integer fits."""
    stride = round(1 / math.sqrt(1 - mask_ratio))
    return stride if abs(1 - 1 / stride**2 - mask_ratio) < 1e-4 else None


def random_noise(batch_size: int, grid_size: Tuple[int, int], mask_ratio: float,
                 device=None) -> torch.Tensor:
    """Uniform per-patch noise, (N, L)."""
    return torch.rand(batch_size, grid_size[0] * grid_size[1], device=device)


def grid_noise(batch_size: int, grid_size: Tuple[int, int], mask_ratio: float,
               device=None) -> torch.Tensor:
    """Keep the patch at a random offset (same in every cell) of each s x s cell, (N, L)."""
    rows, cols = grid_size
    stride = grid_stride(mask_ratio)
    offset = torch.randint(0, stride, (batch_size, 2), device=device)
    r = torch.arange(rows, device=device)[None, :, None]
    c = torch.arange(cols, device=device)[None, None, :]
    keep = ((r % stride) == offset[:, 0, None, None]) & ((c % stride) == offset[:, 1, None, None])
    # Kept patches get noise in [0, 1), masked ones in [1, 2); randomness only orders ties.
    noise = (~keep).float() + torch.rand(batch_size, rows, cols, device=device)
    return noise.reshape(batch_size, rows * cols)


def block_noise(batch_size: int, grid_size: Tuple[int, int], mask_ratio: float, device=None,
                min_block_patches: int = 16, min_aspect: float = 0.3,
                max_attempts: int = 10) -> torch.Tensor:
    """BEiT's block-wise masking expressed as noise, (N, L).

    Blocks of at least ``min_block_patches`` patches and aspect ratio in
    ``[min_aspect, 1/min_aspect]`` are added until the masked count is reached; patches in blocks
    get noise in [1, 2), the rest in [0, 1), so any shortfall is filled at random and exactly
    ``L - len_keep`` patches end up masked.
    """
    rows, cols = grid_size
    num_patches = rows * cols
    target = num_patches - num_visible(num_patches, mask_ratio)
    blocked = torch.zeros(batch_size, rows, cols, dtype=torch.bool)
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    for b in range(batch_size):
        count = 0
        while count < target:
            added = 0
            for _ in range(max_attempts):
                area = _uniform(min_block_patches, max(min_block_patches, target - count))
                aspect = math.exp(_uniform(*log_aspect))
                h = int(round(math.sqrt(area * aspect)))
                w = int(round(math.sqrt(area / aspect)))
                if not (0 < h <= rows and 0 < w <= cols):
                    continue
                top = int(torch.randint(0, rows - h + 1, ()))
                left = int(torch.randint(0, cols - w + 1, ()))
                region = blocked[b, top:top + h, left:left + w]
                new = h * w - int(region.sum())
                if 0 < new <= target - count:
                    region.fill_(True)
                    added = new
                    break
            if added == 0:
                break
            count += added
    noise = blocked.float() + torch.rand(batch_size, rows, cols)
    return noise.reshape(batch_size, num_patches).to(device)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


NOISE_FUNCTIONS = dict(random=random_noise, block=block_noise, grid=grid_noise)

