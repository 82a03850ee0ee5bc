"""Official MAE, timm and mae-mm checkpoints load without a conversion step."""
import torch
from mmengine.runner import load_checkpoint

from mae_mm.registry import MODELS

from ..conftest import tiny_mae_cfg
from ..test_utils._foreign_layouts import (official_checkpoint, official_decoder_names,
                                           official_encoder_names, timm_names, timm_state_dict)


def test_load_from_official_full_checkpoint(tmp_path):
    src = MODELS.build(tiny_mae_cfg())
    path = tmp_path / 'mae_visualize.pth'
    official = official_checkpoint(src)  # {'model': models_mae.py's keys}, written by hand
    assert list(official['model']) == official_encoder_names() + official_decoder_names()
    torch.save(official, path)
    torch.manual_seed(1)
    dst = MODELS.build(tiny_mae_cfg())
    assert not torch.equal(dst.state_dict()['neck.decoder_pred.weight'],
                           src.state_dict()['neck.decoder_pred.weight'])
    load_checkpoint(dst, str(path), strict=True)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key


def test_backbone_pretrained_from_official_encoder_and_timm(tmp_path):
    src = MODELS.build(tiny_mae_cfg())
    # mae_pretrain_vit_*.pth: {'model': encoder keys of models_mae.py}
    torch.save(official_checkpoint(src, encoder_only=True), tmp_path / 'mae_pretrain.pth')
    # timm.create_model('vit_*_224.mae').state_dict(): the bare encoder, token pool, no head
    timm = timm_state_dict(src)
    assert list(timm) == timm_names()
    torch.save(timm, tmp_path / 'timm.pth')
    torch.save({'state_dict': src.state_dict()}, tmp_path / 'mae_mm.pth')
    x = torch.randn(2, 3, 32, 32)
    expected = src.backbone(x, mask=False)[0]
    for name in ('mae_pretrain.pth', 'timm.pth', 'mae_mm.pth'):
        backbone = MODELS.build(dict(
            type='MaskedViT', arch=tiny_mae_cfg()['backbone']['arch'], img_size=32, patch_size=8,
            mask_ratio=0.0, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / name),
                                          prefix='backbone.')))
        backbone.init_weights()
        torch.testing.assert_close(backbone(x)[0], expected, rtol=0, atol=0, msg=name)


def test_pretrained_into_larger_image_resamples_position_and_reports_keys(tmp_path):
    src = MODELS.build(tiny_mae_cfg())
    torch.save({'state_dict': src.state_dict()}, tmp_path / 'ckpt.pth')
    backbone = MODELS.build(dict(
        type='MaskedViT', arch=tiny_mae_cfg()['backbone']['arch'], img_size=(48, 64),
        patch_size=8, mask_ratio=0.0, out_type='avg_featmap',
        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ckpt.pth'))))
    report = backbone.load_pretrained(str(tmp_path / 'ckpt.pth'))
    assert 'expected missing' in report and 'fc_norm' in report
    assert 'UNEXPECTED' not in report and 'MISSING' not in report.replace('expected missing', '')
    from mae_mm.models.layers import resize_pos_embed
    torch.testing.assert_close(backbone.pos_embed.data,
                               resize_pos_embed(src.backbone.pos_embed.data, (4, 4), (6, 8)))
    assert torch.equal(backbone.blocks[1].mlp.fc2.weight, src.backbone.blocks[1].mlp.fc2.weight)
