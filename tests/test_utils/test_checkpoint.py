"""Checkpoint formats: detection, key maps, loading into models, the key-mismatch report.

Expected key names are written out by hand (here for mmpretrain, in ``_foreign_layouts`` for
facebookresearch/mae and timm, from those projects' module definitions), never produced by the
functions under test.
"""
import copy
import os

import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint

from mae_mm.registry import MODELS
from mae_mm.utils.checkpoint import (ConversionResult, convert_state_dict, detect_format,
                                     group_keys, load_backbone_state_dict, mae_mm_checkpoint,
                                     mae_mm_to_official, mmpretrain_to_mae_mm,
                                     official_to_mae_mm, report_key_mismatch,
                                     save_checkpoint_atomic, sincos_orientation,
                                     split_key_mismatch)
from mae_mm.utils.compat import CheckpointLoadError
from ..conftest import TINY_ARCH, tiny_mae_cfg
from ._foreign_layouts import (OFFICIAL_BLOCK, mae_mm_name, official_decoder_names,
                               official_encoder_names, official_state_dict,
                               timm_names, timm_state_dict)

NUM_LAYERS, DECODER_DEPTH = TINY_ARCH['num_layers'], 1

# The same block in mmpretrain (``TransformerEncoderLayer``), position by position.
MMPRETRAIN_BLOCK = ['ln1.weight', 'ln1.bias', 'attn.qkv.weight', 'attn.qkv.bias',
                    'attn.proj.weight', 'attn.proj.bias', 'ln2.weight', 'ln2.bias',
                    'ffn.layers.0.0.weight', 'ffn.layers.0.0.bias', 'ffn.layers.1.weight',
                    'ffn.layers.1.bias']


def build_mae(seed: int, **backbone):
    torch.manual_seed(seed)
    return MODELS.build(tiny_mae_cfg(**backbone)).eval()


def random_like(state):
    gen = torch.Generator().manual_seed(123)
    return {k: torch.randn(v.shape, generator=gen) for k, v in state.items()}


def outputs(model, x, noise):
    with torch.no_grad():
        feats = model.backbone(x, mask=False)
        loss, pred, mask = model.forward_loss(x, noise=noise)
    return feats, loss, pred, mask


def assert_same_outputs(a, b):
    feats_a, loss_a, pred_a, mask_a = a
    feats_b, loss_b, pred_b, mask_b = b
    assert len(feats_a) == len(feats_b)
    for fa, fb in zip(feats_a, feats_b):
        torch.testing.assert_close(fa, fb, rtol=0, atol=0)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    torch.testing.assert_close(pred_a, pred_b, rtol=0, atol=0)
    assert torch.equal(mask_a, mask_b)


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(7)
    return torch.randn(2, 3, 32, 32, generator=gen), torch.rand(2, 16, generator=gen)


# ------------------------------------------------------------------------------------------------
def test_mae_mm_uses_official_names():
    model = build_mae(0)
    expected = {mae_mm_name(n) for n in official_encoder_names() + official_decoder_names()}
    assert set(model.state_dict()) == expected


def test_round_trip_official_mae_mm_official_is_lossless():
    official = random_like(official_state_dict(build_mae(0)))
    mae_mm = official_to_mae_mm({'model': official})
    assert set(mae_mm) == {mae_mm_name(k) for k in official}
    back = mae_mm_to_official(mae_mm)
    assert list(back) == list(official)
    for key, value in official.items():
        assert torch.equal(back[key], value), key


def test_round_trip_encoder_only():
    official = random_like(official_state_dict(build_mae(0), encoder_only=True))
    mae_mm = official_to_mae_mm(official)
    assert set(mae_mm) == {'backbone.' + k for k in official_encoder_names()}
    back = mae_mm_to_official(mae_mm, encoder_only=True)
    assert set(back) == set(official_encoder_names())
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_encoder_only_output_drops_the_decoder():
    model = build_mae(0)
    result = convert_state_dict({'meta': {}, 'state_dict': model.state_dict()}, 'official',
                                encoder_only=True)
    assert set(result.state_dict) == set(official_encoder_names())
    assert {k for k, _ in result.dropped} == {'neck.' + n for n in official_decoder_names()}
    assert 'decoder (encoder-only output)' in result.report()


def test_official_weights_give_identical_outputs_via_load_checkpoint(tmp_path, inputs):
    source = build_mae(0)
    path = tmp_path / 'converted.pth'
    converted = official_to_mae_mm({'model': official_state_dict(source)})
    save_checkpoint_atomic(mae_mm_checkpoint(converted, dict(source_format='official')), path)

    fresh = build_mae(1)
    x, noise = inputs
    assert not torch.equal(outputs(fresh, x, noise)[1], outputs(source, x, noise)[1])
    ckpt = load_checkpoint(fresh, str(path), map_location='cpu', strict=True)
    assert ckpt['meta']['source_format'] == 'official'
    assert_same_outputs(outputs(fresh, x, noise), outputs(source, x, noise))


def test_pretrained_init_cfg_with_prefix_loads_the_backbone(tmp_path, inputs):
    source = build_mae(0)
    path = tmp_path / 'converted.pth'
    converted = official_to_mae_mm({'model': official_state_dict(source, encoder_only=True)})
    save_checkpoint_atomic(mae_mm_checkpoint(converted), path)
    torch.manual_seed(5)
    backbone = MODELS.build(dict(
        type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')))
    backbone.init_weights()
    backbone.eval()
    x, _ = inputs
    with torch.no_grad():
        torch.testing.assert_close(backbone(x, mask=False)[0], source.backbone(x, mask=False)[0],
                                   rtol=0, atol=0)


def test_detect_format_of_each_format():
    model = build_mae(0)
    full = official_state_dict(model)
    encoder = official_state_dict(model, encoder_only=True)
    assert detect_format({'meta': {'epoch': 3}, 'state_dict': model.state_dict(),
                          'optimizer': {}}) == 'mae_mm'
    assert detect_format(model.state_dict()) == 'mae_mm'
    assert detect_format({'model': full}) == 'official'  # mae_visualize_vit_*.pth
    assert detect_format({'model': encoder}) == 'official'  # mae_pretrain_vit_*.pth
    assert detect_format(full) == 'official'  # decoder keys are MAE's own
    timm = timm_state_dict(model)  # timm.create_model('vit_*_224.mae').state_dict()
    assert detect_format(timm) == 'timm'
    assert detect_format({'state_dict': timm, 'epoch': 1}) == 'timm'
    assert detect_format({'module.' + k: v for k, v in timm.items()}) == 'timm'
    mmpretrain = {'backbone.patch_embed.projection.weight': torch.zeros(1),
                  'backbone.layers.0.ln1.weight': torch.zeros(1),
                  'neck.ln1.weight': torch.zeros(1)}
    assert detect_format({'meta': {}, 'state_dict': mmpretrain}) == 'mmpretrain'
    with pytest.raises(ValueError, match='unknown checkpoint format'):
        detect_format({'vit.embeddings.cls_token': torch.zeros(1)})
    with pytest.raises(ValueError, match='no state dict found'):
        detect_format({'meta': {}, 'epoch': 3})


def test_official_fine_tuned_checkpoint_drops_the_classifier():
    model = build_mae(0)
    finetuned = official_state_dict(model, encoder_only=True)
    del finetuned['norm.weight'], finetuned['norm.bias']  # global pool: fc_norm replaces norm
    finetuned.update({'fc_norm.weight': torch.ones(64), 'fc_norm.bias': torch.zeros(64),
                      'head.weight': torch.zeros(10, 64), 'head.bias': torch.zeros(10)})
    result = convert_state_dict({'model': finetuned}, 'mae_mm')
    assert result.source_format == 'official'
    assert {k for k, _ in result.dropped} == {'head.weight', 'head.bias'}
    assert 'backbone.fc_norm.weight' in result.state_dict
    report = result.report()
    assert 'classifier of a fine-tuned model' in report
    assert 'backbone.norm.{bias,weight}' in report  # reported missing

    backbone = load_backbone_state_dict({'model': finetuned})
    avg = MODELS.build(dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                            out_type='avg_featmap', final_norm=False))
    mismatch = split_key_mismatch(avg.state_dict(), backbone)
    assert mismatch.missing == ['norm.weight', 'norm.bias'] and not mismatch.unexpected


def test_timm_fine_tuned_layout_drops_the_classifier():
    """timm's ``VisionTransformer(global_pool='avg', num_classes=10)``: ``fc_norm`` replaces
    ``norm``, and ``head`` is the classifier."""
    model = build_mae(0)
    names = timm_names(global_pool='avg', num_classes=10)
    assert 'norm.weight' not in names and names[-4:] == [
        'fc_norm.weight', 'fc_norm.bias', 'head.weight', 'head.bias']
    own = {'fc_norm.weight': torch.full((64, ), 2.0), 'fc_norm.bias': torch.full((64, ), 0.5),
           'head.weight': torch.ones(10, 64), 'head.bias': torch.ones(10)}
    state = model.state_dict()
    timm_ft = {n: own[n] if n in own else state[mae_mm_name(n)].clone() for n in names}
    result = convert_state_dict(timm_ft, 'mae_mm')
    assert {k for k, _ in result.dropped} == {'head.weight', 'head.bias'}
    backbone = load_backbone_state_dict(timm_ft)
    assert torch.equal(backbone['fc_norm.weight'], own['fc_norm.weight'])
    assert torch.equal(backbone['blocks.1.mlp.fc2.weight'],
                       state['backbone.blocks.1.mlp.fc2.weight'])
    avg = MODELS.build(dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                            out_type='avg_featmap', final_norm=False))
    mismatch = split_key_mismatch(avg.state_dict(), backbone)
    assert mismatch.missing == ['norm.weight', 'norm.bias'] and not mismatch.unexpected


def test_load_backbone_state_dict_from_every_format(tmp_path):
    model = build_mae(0)
    expected = model.backbone.state_dict()
    files = {
        'mae_mm': {'meta': {}, 'state_dict': model.state_dict()},
        'official': {'model': official_state_dict(model)},
        'official_encoder': {'model': official_state_dict(model, encoder_only=True)},
        'timm': timm_state_dict(model),
    }
    for name, obj in files.items():
        path = tmp_path / f'{name}.pth'
        torch.save(obj, path)
        for source in (path, str(path), obj):
            state = load_backbone_state_dict(source)
            assert list(state) == list(expected), name
            assert all(torch.equal(state[k], expected[k]) for k in expected), name
    # what a backbone does with it
    fresh = MODELS.build(dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8))
    fresh.load_state_dict(load_backbone_state_dict(tmp_path / 'official.pth'), strict=True)


def test_load_backbone_state_dict_wrong_prefix():
    model = build_mae(0)
    with pytest.raises(ValueError, match=r"starts with 'encoder\.'.*'backbone\.', 'neck\.'"):
        load_backbone_state_dict(model.state_dict(), prefix='encoder')


def test_truncated_checkpoint_gives_one_line_error(tmp_path):
    path = tmp_path / 'truncated.pth'
    save_checkpoint_atomic({'model': official_state_dict(build_mae(0))}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointLoadError) as info:
        load_backbone_state_dict(path)
    message = str(info.value)
    assert '\n' not in message and 'truncated' in message and 'truncated.pth' in message


def test_save_checkpoint_atomic(tmp_path):
    path = tmp_path / 'sub' / 'ckpt.pth'
    save_checkpoint_atomic({'a': torch.ones(2)}, path)
    save_checkpoint_atomic({'a': torch.zeros(2)}, path)  # overwrite
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.zeros(2))
    with pytest.raises(Exception):
        save_checkpoint_atomic({'a': lambda: 0}, path)  # cannot be pickled
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.zeros(2))
    assert os.listdir(path.parent) == ['ckpt.pth']  # no temporary file left


def test_mask_token_ablation_keeps_the_decoder_mask_token():
    model = build_mae(0, mask_token_in_encoder=True)
    state = model.state_dict()
    assert 'backbone.mask_token' in state and 'neck.mask_token' in state
    result = convert_state_dict(state, 'official')
    assert torch.equal(result.state_dict['mask_token'], state['neck.mask_token'])
    assert [k for k, _ in result.dropped] == ['backbone.mask_token']
    assert 'mask-token-in-encoder ablation' in result.report()
    # to mae_mm nothing is lost
    same = convert_state_dict(state, 'mae_mm')
    assert list(same.state_dict) == list(state) and not same.dropped


def test_report_key_mismatch_sections():
    model_keys = ['cls_token', 'pos_embed'] + [
        f'blocks.{i}.{p}' for i in range(3)
        for p in ('attn.qkv.weight', 'attn.rel_pos_h', 'attn.rel_pos_w')] + ['fc_norm.weight']
    ckpt_keys = ['cls_token', 'pos_embed'] + [f'blocks.{i}.attn.qkv.weight' for i in range(3)] \
        + ['decoder_pred.weight', 'head.weight', 'head.bias']
    report = report_key_mismatch(model_keys, ckpt_keys, expected_missing_patterns=[r'rel_pos'],
                                 expected_unexpected_patterns=[r'^decoder_'])
    lines = report.splitlines()
    assert lines[0] == 'checkpoint: 5 of 12 model keys loaded'
    assert lines[1] == 'MISSING in the checkpoint (left as initialised): 1 key'
    assert lines[2] == '  fc_norm.weight'
    assert lines[3] == 'expected missing (not in this checkpoint format, fine): 6 keys'
    assert lines[4] == '  blocks.{0-2}.attn.{rel_pos_h,rel_pos_w}'
    assert lines[5] == 'UNEXPECTED in the checkpoint (ignored): 2 keys'
    assert lines[6] == '  head.{bias,weight}'
    assert lines[7] == 'expected unexpected (ignored, fine): 1 key'
    assert lines[8] == '  decoder_pred.weight'
    assert len(lines) == 9

    ok = report_key_mismatch(model_keys, ckpt_keys + ['fc_norm.weight'],
                             expected_missing_patterns=[r'rel_pos'],
                             expected_unexpected_patterns=[r'^decoder_', r'^head\.'])
    assert 'MISSING' not in ok and 'UNEXPECTED' not in ok
    assert ok.splitlines()[-1] == 'no missing or unexpected keys beyond the expected ones'
    # rel_pos not declared expected: an error
    assert 'MISSING in the checkpoint (left as initialised): 7 keys' in report_key_mismatch(
        model_keys, ckpt_keys)


def test_report_key_mismatch_shapes():
    model = {'pos_embed': torch.zeros(1, 17, 64), 'cls_token': torch.zeros(1, 1, 64)}
    ckpt = {'pos_embed': torch.zeros(1, 197, 64), 'cls_token': torch.zeros(1, 1, 64)}
    mismatch = split_key_mismatch(model, ckpt)
    assert not mismatch.ok and mismatch.matched == ['cls_token']
    assert 'pos_embed: model [1, 17, 64] vs checkpoint [1, 197, 64]' in mismatch.report()
    assert report_key_mismatch(model, model).endswith('no missing or unexpected keys')


def expand(line):
    """All keys a grouped line stands for (``{0-2,5}`` ranges, ``{a,b}`` alternatives)."""
    import itertools
    import re
    parts = re.split(r'(\{[^}]*\})', line)
    choices = []
    for part in parts:
        if part.startswith('{'):
            items = []
            for item in part[1:-1].split(','):
                lo, _, hi = item.partition('-')
                items += ([str(i) for i in range(int(lo), int(hi) + 1)]
                          if hi and lo.isdigit() else [item])
            choices.append(items)
        else:
            choices.append([part])
    return [''.join(c) for c in itertools.product(*choices)]


def test_group_keys_is_exact():
    keys = [f'blocks.{i}.norm1.{w}' for i in (0, 1, 2, 5) for w in ('weight', 'bias')]
    keys += ['blocks.3.norm1.weight', 'cls_token', 'layers.0.ffn.layers.0.0.weight',
             'layers.1.ffn.layers.0.0.weight', 'a.0.b.1.c', 'a.1.b.0.c']
    lines = group_keys(keys)
    assert lines == ['blocks.{0-3,5}.norm1.weight', 'blocks.{0-2,5}.norm1.bias', 'cls_token',
                     'layers.{0-1}.ffn.layers.0.0.weight', 'a.0.b.1.c', 'a.1.b.0.c']
    expanded = [k for line in lines for k in expand(line)]
    assert sorted(expanded) == sorted(keys)


# ------------------------------------------------------------------------------------------------
# mmpretrain
# ------------------------------------------------------------------------------------------------
def mmpretrain_names(num_layers=NUM_LAYERS, depth=DECODER_DEPTH):
    """(mmpretrain key, official key) pairs of an mmpretrain MAE checkpoint, by hand."""
    pairs = [('backbone.cls_token', 'cls_token'), ('backbone.pos_embed', 'pos_embed'),
             ('backbone.patch_embed.projection.weight', 'patch_embed.proj.weight'),
             ('backbone.patch_embed.projection.bias', 'patch_embed.proj.bias')]
    pairs += [(f'backbone.layers.{i}.{m}', f'blocks.{i}.{o}') for i in range(num_layers)
              for m, o in zip(MMPRETRAIN_BLOCK, OFFICIAL_BLOCK)]
    pairs += [('backbone.ln1.weight', 'norm.weight'), ('backbone.ln1.bias', 'norm.bias'),
              ('neck.mask_token', 'mask_token'), ('neck.decoder_pos_embed', 'decoder_pos_embed'),
              ('neck.decoder_embed.weight', 'decoder_embed.weight'),
              ('neck.decoder_embed.bias', 'decoder_embed.bias')]
    pairs += [(f'neck.decoder_blocks.{i}.{m}', f'decoder_blocks.{i}.{o}') for i in range(depth)
              for m, o in zip(MMPRETRAIN_BLOCK, OFFICIAL_BLOCK)]
    pairs += [('neck.ln1.weight', 'decoder_norm.weight'), ('neck.ln1.bias', 'decoder_norm.bias'),
              ('neck.decoder_pred.weight', 'decoder_pred.weight'),
              ('neck.decoder_pred.bias', 'decoder_pred.bias')]
    return pairs


def transposed_grid(table, side):
    """The table with its (side x side) grid transposed, cls row kept."""
    grid = table[:, 1:].reshape(1, side, side, -1).transpose(1, 2).reshape(1, side * side, -1)
    return torch.cat([table[:, :1], grid], dim=1)


def test_mmpretrain_key_map_by_hand():
    model = build_mae(0)
    official = official_state_dict(model)
    pairs = mmpretrain_names()
    mmpretrain = {m: official[o].clone() for m, o in pairs}
    # an mmpretrain table: the transpose of the official sin-cos one
    mmpretrain['backbone.pos_embed'] = transposed_grid(official['pos_embed'], 4)
    result = convert_state_dict({'meta': {}, 'state_dict': mmpretrain}, 'mae_mm')
    assert result.source_format == 'mmpretrain' and not result.dropped
    assert list(result.state_dict) == [mae_mm_name(o) for _, o in pairs]
    for m, o in pairs:
        assert torch.equal(result.state_dict[mae_mm_name(o)], mmpretrain[m]), m  # as is
    assert sincos_orientation(mmpretrain['backbone.pos_embed']) == 'transposed'
    assert sincos_orientation(official['pos_embed']) == 'official'
    report = result.report()
    assert "backbone.pos_embed is the sin-cos table in mmpretrain's (transposed)" in report
    assert 'backbone.layers.{0-1}.ffn.layers.0.0.{bias,weight} -> ' \
        'backbone.blocks.{0-1}.mlp.fc1.{bias,weight}' in report
    # straight to official, and bare backbone state dicts
    to_official = convert_state_dict({'state_dict': mmpretrain}, 'official').state_dict
    assert list(to_official) == [o for _, o in pairs]
    bare = {m[len('backbone.'):]: v for m, v in mmpretrain.items() if m.startswith('backbone.')}
    assert detect_format(bare) == 'mmpretrain'
    assert list(mmpretrain_to_mae_mm(bare)) == ['backbone.' + n for n in official_encoder_names()]


def test_mmpretrain_unknown_keys_are_kept_and_reported():
    mmpretrain = {m: torch.zeros(1) for m, _ in mmpretrain_names()}
    mmpretrain['backbone.layers.0.attn.gamma1.weight'] = torch.zeros(1)  # layer scale
    mmpretrain['head.fc.weight'] = torch.zeros(1)
    mmpretrain['data_preprocessor.mean'] = torch.zeros(1)
    result = convert_state_dict(mmpretrain, 'mae_mm')
    assert 'backbone.layers.0.attn.gamma1.weight' in result.state_dict
    assert {k for k, _ in result.dropped} == {'head.fc.weight', 'data_preprocessor.mean'}
    report = result.report()
    assert 'have no mae-mm counterpart' in report
    assert 'not MAE keys (1 keys' in report


@pytest.fixture
def mmpretrain_mae():
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    torch.manual_seed(11)
    model = MMPRETRAIN_MODELS.build(dict(
        type='MAE', _scope_='mmpretrain',
        backbone=dict(type='MAEViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                      mask_ratio=0.75),
        neck=dict(type='MAEPretrainDecoder', num_patches=16, patch_size=8, in_chans=3,
                  embed_dim=64, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4,
                  mlp_ratio=4),
        head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=8,
                  loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    model.init_weights()
    # trained-looking weights, so that no component is left at a trivial init
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'pos_embed' not in name:
                param.add_(0.05 * torch.randn(param.shape, generator=gen))
    return model.eval()


def test_mmpretrain_model_converts_to_identical_mae_mm_model(mmpretrain_mae, inputs,
                                                              monkeypatch):
    state = mmpretrain_mae.state_dict()
    assert {k for k, _ in mmpretrain_names()} == set(state)  # the names written by hand
    assert sincos_orientation(state['backbone.pos_embed']) == 'transposed'
    result = convert_state_dict({'meta': {}, 'state_dict': state}, 'mae_mm')
    assert result.source_format == 'mmpretrain' and not result.dropped
    model = build_mae(1)
    model.load_state_dict(result.state_dict, strict=True)
    x, noise = inputs
    with torch.no_grad():
        ref_feats = mmpretrain_mae.backbone(x, mask=None)
        monkeypatch.setattr(torch, 'rand', lambda *a, **k: noise.clone())
        ref_latent, ref_mask, ids_restore = mmpretrain_mae.backbone(x)
        monkeypatch.undo()
        ref_pred = mmpretrain_mae.neck(ref_latent, ids_restore)
        ref_loss = mmpretrain_mae.head.loss(ref_pred, x, ref_mask)
        feats, loss, pred, mask = outputs(model, x, noise)
    torch.testing.assert_close(feats[0], ref_feats[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(pred, ref_pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)

    # transposing the table instead would change the model: copying as is is the right map
    wrong = copy.deepcopy(result.state_dict)
    wrong['backbone.pos_embed'] = transposed_grid(wrong['backbone.pos_embed'], 4)
    model.load_state_dict(wrong, strict=True)
    with torch.no_grad():
        assert not torch.allclose(model.backbone(x, mask=False)[0], ref_feats[0], atol=1e-3)


def test_conversion_result_is_a_record():
    result = convert_state_dict(official_state_dict(build_mae(0)), 'mae_mm')
    assert isinstance(result, ConversionResult)
    assert result.source_format == 'official' and result.target_format == 'mae_mm'
    assert all(dst == mae_mm_name(src) for src, dst in result.renamed)
    assert result.key_check().ok
    with pytest.raises(ValueError, match='unknown target format'):
        convert_state_dict({}, 'timm')


def test_mmpretrain_fine_tuned_vit_converts(mmpretrain_mae, inputs):
    """mmpretrain's fine-tuning ViT (avg pool + ``ln2``, no final norm) -> MaskedViT."""
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    torch.manual_seed(12)
    vit = MMPRETRAIN_MODELS.build(dict(
        type='VisionTransformer', _scope_='mmpretrain', arch=TINY_ARCH, img_size=32,
        patch_size=8, final_norm=False, out_type='avg_featmap',
        norm_cfg=dict(type='LN', eps=1e-6)))
    vit.eval()  # (mmpretrain's ViT.train() returns None)
    state = {'backbone.' + k: v for k, v in vit.state_dict().items()}
    assert 'backbone.ln2.weight' in state and 'backbone.ln1.weight' not in state
    state['head.layers.head.weight'] = torch.zeros(10, 64)
    state['head.layers.head.bias'] = torch.zeros(10)
    result = convert_state_dict({'meta': {}, 'state_dict': state}, 'mae_mm')
    assert {k for k, _ in result.dropped} == {'head.layers.head.weight', 'head.layers.head.bias'}
    backbone = load_backbone_state_dict({'state_dict': state})
    model = MODELS.build(dict(type='MaskedViT', arch=TINY_ARCH, img_size=32, patch_size=8,
                              final_norm=False, out_type='avg_featmap')).eval()
    mismatch = split_key_mismatch(model.state_dict(), backbone)
    assert mismatch.missing == ['norm.weight', 'norm.bias'] and not mismatch.unexpected
    model.load_state_dict(backbone, strict=False)
    x, _ = inputs
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask=False)[0], vit(x)[0], rtol=1e-5, atol=1e-5)
