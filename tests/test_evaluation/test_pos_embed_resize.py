"""Resizing the position embedding of a 224 checkpoint (14 x 14 grid) for other input sizes:
bicubic on the 2-D grid, cls position kept, values at corresponding grid positions preserved."""
import pytest
import torch

from mae_mm.models.layers import resize_pos_embed, sincos_2d_position_embedding
from mae_mm.registry import MODELS
from ..conftest import TINY_ARCH

SRC = (14, 14)


def _linear_table(grid, extra=1):
    """Channels that are known functions of the grid position: row, column, and a plane."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]).float(), torch.arange(grid[1]).float(),
                                indexing='ij')
    chans = torch.stack([rows, cols, 0.3 * rows - 0.7 * cols + 2.0], dim=-1).reshape(-1, 3)
    cls = torch.full((extra, 3), 7.0)
    return torch.cat([cls, chans]).unsqueeze(0)


def _source_coords(dst):
    """Where output cell (i, j) sits on the source grid (cell centres, as align_corners=False)."""
    i = torch.arange(dst[0]).float()
    j = torch.arange(dst[1]).float()
    y = (i + 0.5) * SRC[0] / dst[0] - 0.5
    x = (j + 0.5) * SRC[1] / dst[1] - 0.5
    return torch.meshgrid(y, x, indexing='ij')


def test_unchanged_size_is_the_original():
    table = sincos_2d_position_embedding(SRC, 32)
    assert torch.equal(resize_pos_embed(table, SRC, SRC), table)


@pytest.mark.parametrize('dst', [(32, 32), (14, 20)])
def test_values_land_at_corresponding_positions(dst):
    out = resize_pos_embed(_linear_table(SRC), SRC, dst)
    assert out.shape == (1, 1 + dst[0] * dst[1], 3)
    assert torch.equal(out[0, 0], torch.full((3, ), 7.0))  # cls position untouched
    grid = out[0, 1:].reshape(*dst, 3)  # tokens are row-major
    y, x = _source_coords(dst)
    expected = torch.stack([y, x, 0.3 * y - 0.7 * x + 2.0], dim=-1)
    # Away from the border (where bicubic clamps), each output holds the value of its source
    # position; bicubic (a = -0.75) reproduces a plane to within 0.05 of a grid step, while a
    # transposed or mis-ordered grid would be off by whole steps.
    # Measured: 0.048 (32 x 32) and 0.047 (14 x 20); the bound sits just above.
    inner = (y >= 1) & (y <= SRC[0] - 2) & (x >= 1) & (x <= SRC[1] - 2)
    assert (grid - expected)[inner].abs().max() < 0.05
    # The bound is meaningful: the plane read one output cell further down or right (what an
    # off-by-one grid would hold) is off by 0.49-1.0 (measured).
    for dy, dx in ((1, 0), (0, 1)):
        ys, xs = y + dy * SRC[0] / dst[0], x + dx * SRC[1] / dst[1]
        moved = torch.stack([ys, xs, 0.3 * ys - 0.7 * xs + 2.0], dim=-1)
        assert (grid - moved)[inner].abs().max() > 0.4
    if dst[0] == SRC[0]:  # unchanged rows are copied exactly, everywhere
        torch.testing.assert_close(grid[..., 0], y)


@pytest.mark.parametrize('dst', [(32, 32), (14, 20)])
def test_a_source_cell_only_moves_its_neighbourhood(dst):
    table = sincos_2d_position_embedding(SRC, 16)
    bumped = table.clone()
    r, c = 5, 9
    bumped[0, 1 + r * SRC[1] + c] += 1.0
    diff = (resize_pos_embed(bumped, SRC, dst) - resize_pos_embed(table, SRC, dst))
    assert diff[0, 0].abs().max() == 0
    changed = diff[0, 1:].abs().amax(-1).reshape(dst) > 1e-6
    y, x = _source_coords(dst)
    near = ((y - r).abs() < 2) & ((x - c).abs() < 2)  # the bicubic kernel's support
    assert changed.any() and not (changed & ~near).any()
    nearest = ((y - r).abs() + (x - c).abs()).argmin()
    assert changed.flatten()[nearest]


@pytest.mark.parametrize('img_size, grid', [(64, (32, 32)), ((28, 40), (14, 20))])
def test_loading_a_224_style_checkpoint_resizes_the_table(img_size, grid, tmp_path):
    """A checkpoint with a 14 x 14 grid (here 28 px, patch 2) into a 32 x 32 or 14 x 20 model."""
    arch = dict(TINY_ARCH)
    src = MODELS.build(dict(type='MaskedViT', arch=arch, img_size=28, patch_size=2,
                            mask_ratio=0.0))
    torch.save({'model': src.state_dict()}, tmp_path / 'official.pth')
    dst = MODELS.build(dict(type='MaskedViT', arch=arch, img_size=img_size, patch_size=2,
                            mask_ratio=0.0, out_type='avg_featmap', final_norm=False,
                            init_cfg=dict(type='Pretrained',
                                          checkpoint=str(tmp_path / 'official.pth'))))
    dst.init_weights()
    assert dst.grid_size == grid
    torch.testing.assert_close(dst.pos_embed.data,
                               resize_pos_embed(src.pos_embed.data, SRC, grid))
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    assert dst(torch.randn(2, 3, h, w))[0].shape == (2, arch['embed_dims'])
