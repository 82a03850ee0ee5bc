"""Position embedding, patchify and masking against independent recomputations."""
import math

import numpy as np
import pytest
import torch

from mae_mm.models.layers import (check_mask_config, num_visible, patchify, random_masking,
                                  resize_pos_embed, sincos_2d_position_embedding, unpatchify)
from mae_mm.models.layers.mask_noise import block_noise, grid_noise


def official_pos_embed(embed_dim, grid):
    """The formula of facebookresearch/mae util/pos_embed.py, re-derived with numpy loops."""
    rows, cols = grid
    half, quarter = embed_dim // 2, embed_dim // 4
    table = np.zeros((1 + rows * cols, embed_dim))
    for r in range(rows):
        for c in range(cols):
            token = 1 + r * cols + c
            for k in range(quarter):
                w = 1.0 / 10000**(k / quarter)
                table[token, k] = math.sin(c * w)  # first half: column (x) coordinate
                table[token, quarter + k] = math.cos(c * w)
                table[token, half + k] = math.sin(r * w)  # second half: row (y) coordinate
                table[token, half + quarter + k] = math.cos(r * w)
    return table


@pytest.mark.parametrize('grid', [(4, 4), (3, 5)])
def test_sincos_matches_official_formula(grid):
    ours = sincos_2d_position_embedding(grid, 16)[0].numpy()
    np.testing.assert_allclose(ours, official_pos_embed(16, grid), atol=1e-6)
    assert np.all(ours[0] == 0)  # cls position


def test_sincos_rejects_bad_width():
    with pytest.raises(ValueError, match='divisible by 4'):
        sincos_2d_position_embedding((2, 2), 18)


def test_resize_pos_embed_identity_and_corners():
    table = sincos_2d_position_embedding((14, 14), 32)
    assert resize_pos_embed(table, (14, 14), (14, 14)) is table
    for dst in [(32, 32), (14, 20)]:
        out = resize_pos_embed(table, (14, 14), dst)
        assert out.shape == (1, 1 + dst[0] * dst[1], 32)
        assert torch.equal(out[:, 0], table[:, 0])
    # Bicubic on an unchanged axis reproduces that axis: 14x14 -> 14x28 keeps every even column
    # close to the source (align_corners=False maps source column c to 2c + 0.5).
    wide = resize_pos_embed(table, (14, 14), (14, 28))[0, 1:].reshape(14, 28, 32)
    src = table[0, 1:].reshape(14, 14, 32)
    approx = (wide[:, 0::2] + wide[:, 1::2]) / 2
    assert torch.allclose(approx[:, 1:-1], src[:, 1:-1], atol=0.05)


def test_patchify_layout_and_inverse():
    imgs = torch.randn(2, 3, 8, 12)
    patches = patchify(imgs, 4)
    assert patches.shape == (2, 6, 48)
    # patch (row 1, col 2) is token 1*3+2; its element (i, j, c) is at (i*4 + j)*3 + c
    i, j, c = 3, 1, 2
    assert patches[1, 5, (i * 4 + j) * 3 + c] == imgs[1, c, 4 + i, 8 + j]
    assert torch.equal(unpatchify(patches, 4, (2, 3), 3), imgs)
    with pytest.raises(ValueError, match='not divisible'):
        patchify(torch.randn(1, 3, 10, 12), 4)


def test_random_masking_invariants():
    n, length, dim = 4, 16, 3
    tokens = torch.randn(n, length, dim)
    noise = torch.rand(n, length)
    len_keep = num_visible(length, 0.75)
    visible, mask, ids_restore = random_masking(tokens, len_keep, noise)
    assert len_keep == 4 and visible.shape == (n, len_keep, dim)
    assert torch.all(mask.sum(1) == length - len_keep)
    for b in range(n):
        kept = torch.topk(noise[b], len_keep, largest=False).indices
        assert set(kept.tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
        ids_shuffle = torch.argsort(noise[b])
        assert torch.equal(ids_shuffle[ids_restore[b]], torch.arange(length))  # inverse
        assert torch.equal(visible[b], tokens[b, ids_shuffle[:len_keep]])


def test_floor_of_kept_patches():
    assert num_visible(196, 0.75) == 49
    assert num_visible(10, 0.75) == 2  # floor(2.5)


def test_grid_noise_keeps_one_per_cell():
    noise = grid_noise(3, (4, 6), 0.75)
    _, mask, _ = random_masking(torch.zeros(3, 24, 1), 6, noise)
    mask = mask.reshape(3, 4, 6)
    for b in range(3):
        cells = (1 - mask[b]).reshape(2, 2, 3, 2).permute(0, 2, 1, 3).reshape(6, 4)
        assert torch.all(cells.sum(1) == 1)  # exactly one visible patch per 2x2 cell
        kept = torch.nonzero(mask[b] == 0)
        assert len({(int(r) % 2, int(c) % 2) for r, c in kept}) == 1  # same offset everywhere


def test_block_noise_masks_contiguous_blocks():
    torch.manual_seed(1)
    noise = block_noise(2, (14, 14), 0.5)
    _, mask, _ = random_masking(torch.zeros(2, 196, 1), 98, noise)
    assert torch.all(mask.sum(1) == 98)
    grid = mask.reshape(2, 14, 14)
    # Blocks leave masked patches mostly next to masked patches, unlike random masking.
    same = (grid[:, 1:] == grid[:, :-1]).float().mean()
    assert same > 0.7


@pytest.mark.parametrize('strategy,ratio,grid,message', [
    ('random', 1.0, (4, 4), 'outside'),
    ('random', -0.1, (4, 4), 'outside'),
    ('grid', 0.6, (4, 4), 'cannot reach'),
    ('grid', 0.75, (3, 4), 'divisible by 2'),
    ('block', 0.5, (4, 4), 'fewer than one block'),
    ('spiral', 0.5, (4, 4), 'unknown'),
])
def test_bad_mask_config_messages(strategy, ratio, grid, message):
    with pytest.raises(ValueError, match=message):
        check_mask_config(strategy, ratio, grid)
