"""Random masking by noise, as the official ``random_masking``: the patches with the lowest noise
are kept (the noise of each strategy is made in :mod:`.mask_noise`)."""
from typing import Tuple

import torch


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept per sample: ``floor(L * (1 - r))``, as in the official code."""
    return int(num_patches * (1 - mask_ratio))


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``tokens[i, ids[i]]`` for every sample: (N, L, C), (N, K) -> (N, K, C)."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def random_masking(tokens: torch.Tensor, len_keep: int,
                   noise: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``len_keep`` tokens with the lowest noise (per sample).

    Args:
        tokens (Tensor): (N, L, C) patch tokens.
        len_keep (int): Tokens kept per sample.
        noise (Tensor): (N, L) scores; lower is kept.

    Returns:
        tuple: ``visible`` (N, len_keep, C) in shuffled order; ``mask`` (N, L), 1 = masked,
        in the original order; ``ids_restore`` (N, L), the permutation that un-shuffles
        ``cat([visible, masked])`` back to the original order.
    """
    n, length, _ = tokens.shape
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the kept patches first
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    visible = gather_tokens(tokens, ids_shuffle[:, :len_keep])  # (N, len_keep, C)
    mask = torch.ones(n, length, device=tokens.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (N, L): back to the patches' order
    return visible, mask, ids_restore
