"""MaskedViT(rel_pos_bias='beit'): BEiT's per-head relative position bias (the MAE paper's
segmentation transfer), against a reference computation written here from BEiT's semantics:

- one learned scalar per head for every 2-D offset (dy, dx) between a query patch and a key
  patch of a Wh x Ww grid, dy in [-(Wh-1), Wh-1], dx in [-(Ww-1), Ww-1], stored row-major over
  (dy + Wh - 1, dx + Ww - 1) in the first (2Wh-1)(2Ww-1) rows of the table;
- then three more rows: cls token as query (any key), cls token as key (patch query), cls-cls;
- added to the scaled logits q k^T / sqrt(d) before the softmax; zero at initialisation.
"""
import math

import pytest
import torch

from mae_mm.models import MaskedViT
from ..conftest import TINY_ARCH

IMG, PATCH = 32, 8  # a 4 x 4 grid
GRID = IMG // PATCH
HEADS = TINY_ARCH['num_heads']


def _backbone(**kwargs):
    kwargs.setdefault('rel_pos_bias', 'beit')
    return MaskedViT(arch=dict(TINY_ARCH), img_size=IMG, patch_size=PATCH, mask_ratio=0.0,
                     out_type='featmap', out_indices=(0, 1), final_norm=False, **kwargs).eval()


def _reference_bias(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(heads, 1 + HW, 1 + HW) by the definition, one pair at a time."""
    length = height * width + 1
    patches = (2 * height - 1) * (2 * width - 1)
    bias = torch.empty(table.shape[1], length, length)
    for i in range(length):
        for j in range(length):
            if i == 0 and j == 0:
                row = patches + 2
            elif i == 0:
                row = patches
            elif j == 0:
                row = patches + 1
            else:
                (yi, xi), (yj, xj) = divmod(i - 1, width), divmod(j - 1, width)
                row = (yi - yj + height - 1) * (2 * width - 1) + (xi - xj + width - 1)
            bias[:, i, j] = table[row]
    return bias


def _reference_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """Explicit softmax attention with the bias (no scaled_dot_product_attention)."""
    n, length, dim = x.shape
    head_dim = dim // HEADS
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv.view(n, length, 3, HEADS, head_dim).permute(2, 0, 3, 1, 4)
    logits = (q / math.sqrt(head_dim)) @ k.transpose(-2, -1)
    logits = logits + _reference_bias(attn.relative_position_bias_table, GRID, GRID)
    out = logits.softmax(-1) @ v  # (N, heads, L, head_dim)
    return out.transpose(1, 2).reshape(n, length, dim) @ attn.proj.weight.T + attn.proj.bias


def _perturb_tables(model):
    with torch.no_grad():
        for block in model.blocks:
            block.attn.relative_position_bias_table.normal_(std=0.5)


def test_table_shape_names_and_zero_init():
    model = _backbone()
    table = model.blocks[0].attn.relative_position_bias_table
    assert table.shape == ((2 * GRID - 1)**2 + 3, HEADS)
    assert torch.count_nonzero(table) == 0
    keys = set(model.state_dict())
    assert 'blocks.1.attn.relative_position_bias_table' in keys
    assert not any('relative_position_index' in k for k in keys)  # derived, not saved


def test_block_attention_matches_the_reference_computation():
    model = _backbone()
    _perturb_tables(model)
    attn = model.blocks[0].attn
    x = torch.randn(2, GRID * GRID + 1, TINY_ARCH['embed_dims'])
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _reference_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_rectangular_grid_index_matches_the_reference():
    model = MaskedViT(arch=dict(TINY_ARCH), img_size=(24, 40), patch_size=8, mask_ratio=0.0,
                      out_type='featmap', rel_pos_bias='beit').eval()
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.relative_position_bias_table.copy_(torch.randn_like(
            attn.relative_position_bias_table))
        torch.testing.assert_close(attn.relative_position_bias(),
                                   _reference_bias(attn.relative_position_bias_table, 3, 5))


def test_zero_init_gives_the_no_bias_model_and_a_nonzero_table_changes_it():
    plain = _backbone(rel_pos_bias=None)
    biased = _backbone()
    missing, unexpected = biased.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [f'blocks.{i}.attn.relative_position_bias_table'
                               for i in range(TINY_ARCH['num_layers'])] and not unexpected
    img = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        for a, b in zip(plain(img), biased(img)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        _perturb_tables(biased)
        changed = biased(img)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(plain(img), changed))


def test_the_table_is_trained():
    model = _backbone().train()
    model(torch.randn(2, 3, IMG, IMG))[-1].square().mean().backward()
    grad = model.blocks[0].attn.relative_position_bias_table.grad
    assert grad is not None and grad.abs().sum() > 0


def test_pretraining_checkpoint_loads_with_the_tables_expected_missing(tmp_path):
    pretrained = MaskedViT(arch=dict(TINY_ARCH), img_size=IMG, patch_size=PATCH)
    path = tmp_path / 'mae.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in pretrained.state_dict().items()}},
               path)
    model = _backbone()
    report = model.load_pretrained(str(path))
    assert 'relative_position_bias_table' in report
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight,
                               pretrained.blocks[1].attn.qkv.weight)
    assert torch.count_nonzero(model.blocks[0].attn.relative_position_bias_table) == 0
    # The same through init_cfg, as the configs load it.
    model = _backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    torch.testing.assert_close(model.blocks[0].mlp.fc1.weight,
                               pretrained.blocks[0].mlp.fc1.weight)


def test_other_input_sizes_masking_and_subclasses_fail_in_one_line():
    model = _backbone()
    with pytest.raises(ValueError, match='4 x 4 grid') as err:
        model(torch.randn(1, 3, 48, 48))
    assert '\n' not in str(err.value)
    with pytest.raises(ValueError, match='mask_ratio=0'):
        MaskedViT(arch=dict(TINY_ARCH), img_size=IMG, patch_size=PATCH, rel_pos_bias='beit')
    with pytest.raises(ValueError, match="rel_pos_bias='swin' is unknown"):
        _backbone(rel_pos_bias='swin')

    class OwnAttention(MaskedViT):
        def block_attention(self, index, num_heads, qkv_bias):
            return None

    with pytest.raises(ValueError, match='not supported by OwnAttention'):
        OwnAttention(arch=dict(TINY_ARCH), img_size=IMG, patch_size=PATCH, mask_ratio=0.0,
                     rel_pos_bias='beit')
