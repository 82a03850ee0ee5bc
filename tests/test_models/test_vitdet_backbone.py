"""ViTDetBackbone: shapes, attention layout, position-table resampling, padding, checkpointing,
freezing, configuration errors; registered in mae_mm and reachable from mmdet's scope."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import DefaultScope

from mae_mm.models.backbones import ViTDetBackbone
from mae_mm.models.backbones.vitdet_backbone import default_global_blocks

ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)


def _backbone(**kwargs) -> ViTDetBackbone:
    settings = dict(arch=ARCH, img_size=64, patch_size=16, window_size=2,
                    global_attn_indexes=(1, 3), drop_path_rate=0.0)
    settings.update(kwargs)
    return ViTDetBackbone(**settings).eval()


def _copy_weights(dst, src, skip: str = '^$') -> None:
    """Copy the shared weights (those whose name does not match ``skip``)."""
    import re
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if not re.search(skip, k)},
                        strict=False)


@pytest.mark.parametrize('size,grid', [((64, 64), (4, 4)), ((96, 160), (6, 10)),
                                       ((100, 76), (6, 4))])  # remainders dropped
def test_nchw_maps_of_any_input_size(size, grid):
    backbone = _backbone(out_indices=(3, 0, 3))
    maps = backbone(torch.randn(2, 3, *size))
    assert [m.shape for m in maps] == [(2, 32, *grid)] * 3  # in out_indices order, repeats kept
    assert not torch.equal(maps[0], maps[1]) and torch.equal(maps[0], maps[2])


def test_global_and_window_blocks():
    assert default_global_blocks(12) == (2, 5, 8, 11)
    assert default_global_blocks(24) == (5, 11, 17, 23)
    backbone = _backbone()
    assert [b.attn.window_size for b in backbone.blocks] == [2, 0, 2, 0]
    twelve = ViTDetBackbone(arch=dict(ARCH, num_layers=12), img_size=64)
    assert twelve.global_attn_indexes == (2, 5, 8, 11)
    assert [i for i, b in enumerate(twelve.blocks) if b.attn.window_size == 0] == [2, 5, 8, 11]
    everything_global = _backbone(window_size=0)
    assert [b.attn.window_size for b in everything_global.blocks] == [0, 0, 0, 0]


def test_window_larger_than_grid_equals_global_attention():
    global_attn = _backbone(window_size=0)
    windowed = _backbone(window_size=8, use_rel_pos=False, mask_padded_keys=True)
    _copy_weights(windowed, global_attn)
    x = torch.randn(1, 3, 80, 96)  # a 5 x 6 grid inside one padded 8 x 8 window
    torch.testing.assert_close(windowed(x)[0], global_attn(x)[0], rtol=1e-5, atol=1e-5)


def test_zero_relative_tables_change_nothing():
    with_rel = _backbone(use_rel_pos=True)
    without = _backbone(use_rel_pos=False)
    _copy_weights(without, with_rel)
    assert any('rel_pos' in k for k in with_rel.state_dict())
    x = torch.randn(2, 3, 64, 96)
    torch.testing.assert_close(with_rel(x)[0], without(x)[0], rtol=1e-5, atol=1e-5)


def test_position_table_resampled_bicubically_on_the_grid():
    trained = _backbone(pretrain_img_size=64, use_rel_pos=False)  # 4 x 4 table
    assert trained.pos_embed.shape == (1, 17, 32)
    with torch.no_grad():
        trained.pos_embed.normal_()
    x = torch.randn(1, 3, 96, 128)  # a 6 x 8 grid
    native = _backbone(img_size=(96, 128), pos_embed_resample_at_load=True, use_rel_pos=False)
    assert native.pos_embed.shape == (1, 49, 32)
    _copy_weights(native, trained, skip='^pos_embed$')
    grid = trained.pos_embed[0, 1:].reshape(4, 4, 32).permute(2, 0, 1)[None]
    grid = F.interpolate(grid, size=(6, 8), mode='bicubic', align_corners=False)
    with torch.no_grad():
        native.pos_embed.copy_(torch.cat([trained.pos_embed[0, :1],
                                          grid[0].permute(1, 2, 0).reshape(48, 32)])[None])
    torch.testing.assert_close(trained(x)[0], native(x)[0], rtol=1e-5, atol=1e-5)


def test_pad_to_img_size_runs_the_training_grid_and_crop_to_input_crops():
    padded = _backbone(img_size=128, pad_to_img_size=True)
    cropped = _backbone(img_size=128, pad_to_img_size=True, crop_to_input=True)
    plain = _backbone(img_size=128, pad_to_img_size=False)
    _copy_weights(plain, padded)
    _copy_weights(cropped, padded)
    x = torch.randn(2, 3, 90, 64)
    expected = plain(F.pad(x, (0, 64, 0, 38)))[0]
    assert padded(x)[0].shape == (2, 32, 8, 8)  # the padded canvas, as the reference
    torch.testing.assert_close(padded(x)[0], expected)
    out = cropped(x)[0]
    assert out.shape == (2, 32, 5, 4)  # 90 px: 5 whole patches
    torch.testing.assert_close(out, expected[:, :, :5, :4])


def test_activation_checkpointing_gives_the_same_values_and_gradients():
    reference = _backbone().train()
    checkpointed = _backbone(with_cp=True).train()
    _copy_weights(checkpointed, reference)
    x = torch.randn(2, 3, 64, 64)
    for model in (reference, checkpointed):
        model(x)[0].square().sum().backward()
    for (name, a), (_, b) in zip(reference.named_parameters(), checkpointed.named_parameters()):
        if a.grad is None:
            assert b.grad is None, name
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_drop_path_is_linear_and_only_in_training():
    backbone = _backbone(drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for b in backbone.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    x = torch.randn(4, 3, 64, 64)
    assert torch.equal(backbone(x)[0], backbone(x)[0])
    backbone.train()
    assert not torch.equal(backbone(x)[0], backbone(x)[0])


def test_unused_pretrained_parts_are_frozen():
    backbone = _backbone().train()
    assert not backbone.cls_token.requires_grad
    assert not any(p.requires_grad for p in backbone.norm.parameters())
    assert backbone.pos_embed.requires_grad  # fine-tuned, as in ViTDet
    backbone(torch.randn(1, 3, 64, 64))[0].sum().backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)
    with_norm = _backbone(final_norm=True)
    assert all(p.requires_grad for p in with_norm.norm.parameters())


@pytest.mark.parametrize('kwargs,field', [
    (dict(out_indices=(4, )), 'out_indices'),
    (dict(out_indices=()), 'out_indices'),
    (dict(global_attn_indexes=(1, 7)), 'global_attn_indexes'),
    (dict(window_size=-2), 'window_size'),
    (dict(img_size=70), 'img_size'),
])
def test_bad_settings_raise_one_line_errors(kwargs, field):
    with pytest.raises(ValueError, match=field) as error:
        _backbone(**kwargs)
    assert '\n' not in str(error.value)


def test_reachable_by_prefix_from_the_mmdet_scope():
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(dict(type='mae_mm.ViTDetBackbone', arch=ARCH, img_size=64,
                                     window_size=2, global_attn_indexes=(1, )))
        neck = MODELS.build(dict(type='mae_mm.SimpleFeaturePyramid', in_channels=32))
    assert isinstance(backbone, ViTDetBackbone)
    assert type(neck).__module__ == 'mae_mm.models.necks.simple_feature_pyramid'
