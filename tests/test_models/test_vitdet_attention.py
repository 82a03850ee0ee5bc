"""Window attention and decomposed relative position against independent recomputations."""
import pytest
import torch

from mae_mm.models.layers import Attention
from mae_mm.models.layers.window_attention import (WindowRelPosAttention,
                                                   relative_position_table, window_partition,
                                                   window_unpartition)

DIM, HEADS = 16, 2


def _plain_copy(module: WindowRelPosAttention) -> Attention:
    """A global :class:`Attention` with the same qkv/proj weights."""
    plain = Attention(DIM, HEADS)
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if 'rel_pos' not in k})
    return plain


@pytest.mark.parametrize('grid,window', [((6, 6), 3), ((5, 7), 3), ((4, 9), 4)])
def test_masked_windows_equal_plain_attention_inside_each_window(grid, window):
    """``mask_padded_keys=True``: each window attends only among the image tokens inside it
    (edge windows are padded, the padding masked): the same as global attention applied to
    those tokens alone."""
    module = WindowRelPosAttention(DIM, HEADS, window_size=window, mask_padded_keys=True)
    plain = _plain_copy(module)
    x = torch.randn(2, *grid, DIM)
    out = module(x)
    expected = torch.empty_like(x)
    for top in range(0, grid[0], window):
        for left in range(0, grid[1], window):
            tile = x[:, top:top + window, left:left + window]
            rows, cols = tile.shape[1:3]
            attended = plain(tile.reshape(2, rows * cols, DIM)).reshape(2, rows, cols, DIM)
            expected[:, top:top + window, left:left + window] = attended
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_masked_window_covering_the_grid_is_global_attention():
    module = WindowRelPosAttention(DIM, HEADS, window_size=8, mask_padded_keys=True)
    x = torch.randn(1, 5, 6, DIM)
    expected = _plain_copy(module)(x.reshape(1, 30, DIM)).reshape(1, 5, 6, DIM)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('grid,window', [((6, 6), 3), ((5, 7), 3), ((4, 9), 4)])
def test_padded_tokens_take_part_as_keys_by_default(grid, window):
    """The reference: each window is zero-padded to its full size and attends over all of its
    tokens, the padding included (plain attention on the zero-padded window, cut back)."""
    module = WindowRelPosAttention(DIM, HEADS, window_size=window)
    plain = _plain_copy(module)
    x = torch.randn(2, *grid, DIM)
    rows = -(-grid[0] // window) * window
    cols = -(-grid[1] // window) * window
    padded = torch.nn.functional.pad(x, (0, 0, 0, cols - grid[1], 0, rows - grid[0]))
    expected = torch.empty_like(padded)
    for top in range(0, rows, window):
        for left in range(0, cols, window):
            tile = padded[:, top:top + window, left:left + window].reshape(2, window**2, DIM)
            expected[:, top:top + window, left:left + window] = plain(tile).reshape(
                2, window, window, DIM)
    torch.testing.assert_close(module(x), expected[:, :grid[0], :grid[1]], rtol=1e-5,
                               atol=1e-5)
    masked = WindowRelPosAttention(DIM, HEADS, window_size=window, mask_padded_keys=True)
    masked.load_state_dict(module.state_dict())
    if grid[0] % window or grid[1] % window:
        assert not torch.allclose(masked(x), module(x), rtol=1e-3, atol=1e-3)
    else:
        torch.testing.assert_close(masked(x), module(x))


@pytest.mark.parametrize('window', [0, 3])
def test_zero_initialised_relative_tables_give_plain_attention(window):
    module = WindowRelPosAttention(DIM, HEADS, window_size=window, use_rel_pos=True,
                                   rel_pos_grid=(6, 6))
    assert not module.rel_pos_h.any() and not module.rel_pos_w.any()
    size = window or 6
    assert module.rel_pos_h.shape == (2 * size - 1, DIM // HEADS)
    reference = WindowRelPosAttention(DIM, HEADS, window_size=window)
    reference.load_state_dict(_plain_copy(module).state_dict())
    x = torch.randn(2, 6, 6, DIM)
    torch.testing.assert_close(module(x), reference(x), rtol=1e-6, atol=1e-6)


def _attention_by_loops(module, x):
    """softmax(q.k * scale + q.R_h[dy] + q.R_w[dx]) v, token pair by token pair."""
    _, rows, cols, _ = x.shape
    head_dim = DIM // HEADS
    tokens = x[0].reshape(rows * cols, DIM)
    q, k, v = module.qkv(tokens).reshape(rows * cols, 3, HEADS, head_dim).unbind(1)
    out = torch.zeros(rows * cols, HEADS, head_dim)
    for head in range(HEADS):
        for i in range(rows * cols):
            yi, xi = divmod(i, cols)
            logits = torch.zeros(rows * cols)
            for j in range(rows * cols):
                yj, xj = divmod(j, cols)
                logits[j] = (q[i, head] @ k[j, head]) * head_dim**-0.5 \
                    + q[i, head] @ module.rel_pos_h[yi - yj + rows - 1] \
                    + q[i, head] @ module.rel_pos_w[xi - xj + cols - 1]
            out[i, head] = torch.softmax(logits, 0) @ v[:, head]
    return module.proj(out.reshape(rows * cols, DIM)).reshape(1, rows, cols, DIM)


def test_decomposed_relative_position_matches_pairwise_formula():
    module = WindowRelPosAttention(DIM, HEADS, use_rel_pos=True, rel_pos_grid=(3, 4))
    with torch.no_grad():
        module.rel_pos_h.normal_()
        module.rel_pos_w.normal_()
    x = torch.randn(1, 3, 4, DIM)
    with torch.no_grad():
        torch.testing.assert_close(module(x), _attention_by_loops(module, x), rtol=1e-4,
                                   atol=1e-5)


def test_relative_table_lookup_and_resampling():
    table = torch.arange(7.0)[:, None].repeat(1, 3)  # offsets -3..3 of a 4-long axis
    pairs = relative_position_table(table, 4)
    for i in range(4):
        for j in range(4):
            assert torch.equal(pairs[i, j], table[i - j + 3])
    # A global block run on a longer axis: the offset table is stretched linearly, the zero
    # offset stays in the middle with its value, the extremes keep theirs.
    longer = relative_position_table(table, 6)
    assert longer.shape == (6, 6, 3)
    assert torch.equal(longer[2, 2], table[3]) and torch.equal(longer[5, 0], table[6])
    assert torch.equal(longer[0, 5], table[0])


def test_partition_round_trip_with_padding():
    x = torch.randn(2, 5, 7, 3)
    windows, padded = window_partition(x, 3)
    assert padded == (6, 9) and windows.shape == (2 * 2 * 3, 3, 3, 3)
    assert torch.equal(windows[1], x[0, 0:3, 3:6])  # image 0, second window of the first row
    assert torch.equal(window_unpartition(windows, 3, padded, (5, 7)), x)


def test_rejects_tokens_off_their_grid():
    module = WindowRelPosAttention(DIM, HEADS, window_size=2)
    with pytest.raises(ValueError, match=r'\(N, H, W, C\)'):
        module(torch.randn(1, 4, DIM))
    with pytest.raises(ValueError, match='window_size=-1'):
        WindowRelPosAttention(DIM, HEADS, window_size=-1)
