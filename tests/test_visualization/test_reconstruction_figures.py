"""Reconstruction panels against independent computations; models rebuilt from checkpoints."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mae_mm.registry import MODELS
from mae_mm.utils.checkpoint import convert_state_dict, mae_mm_checkpoint
from mae_mm.visualization import (NORM_PIX_NOTE, build_mae_from_checkpoint,
                                  infer_mae_model_config, load_images_for_model, mask_noise,
                                  reconstruct_with_seed, reconstruction_figure_array,
                                  save_reconstruction_figure)
from mae_mm.visualization.reconstruction import _render_figure

PREPROCESSOR = dict(type='mae_mm.MAEDataPreprocessor', mean=[123.675, 116.28, 103.53],
                    std=[58.395, 57.12, 57.375], to_rgb=True)


def mae_cfg(norm_pix=True, img_size=32, mask_strategy='random'):
    """A tiny MAE whose head counts are the standard ones (encoder width/64, decoder width/32),
    so that a config inferred from its weights is the model itself."""
    return dict(
        type='MaskedAutoencoder', data_preprocessor=dict(PREPROCESSOR),
        backbone=dict(type='MaskedViT', img_size=img_size, patch_size=8,
                      mask_strategy=mask_strategy, min_block_patches=2,
                      arch=dict(embed_dims=128, num_layers=2, num_heads=2,
                                feedforward_channels=256)),
        neck=dict(type='MAEDecoder', decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=2),
        head=dict(type='PixelReconstructionHead', norm_pix=norm_pix))


@pytest.fixture
def photos(photo_folder):
    return sorted(glob.glob(osp.join(photo_folder, '*.jpg')))[:3]


def test_panels_paste_back_the_input_exactly_on_visible_patches(photos):
    model = MODELS.build(mae_cfg()).eval()
    imgs = load_images_for_model(model, photos, (32, 48))  # rectangular: 4 x 6 patches
    outputs, panels = reconstruct_with_seed(model, imgs, seed=3)
    assert panels.shape == (3, 4, 32, 48, 3) and panels.dtype == np.uint8
    hidden = outputs['mask'][:, 0].numpy().astype(bool)  # (N, H, W)
    # The mask is constant inside every 8x8 patch and hides 75 % of the 24 patches.
    per_patch = hidden.reshape(3, 4, 8, 6, 8)
    assert (per_patch == per_patch[:, :, :1, :, :1]).all()
    assert (per_patch[:, :, 0, :, 0].sum(axis=(1, 2)) == 18).all()
    visible = ~hidden
    # Floats: the pasted image is the input itself on visible pixels.
    assert np.array_equal(outputs['pasted'].permute(0, 2, 3, 1).numpy()[visible],
                          outputs['input'].permute(0, 2, 3, 1).numpy()[visible])
    # The uint8 panels: pasted == original on visible, == reconstruction on hidden; masked gray.
    original, masked, recon, pasted = (panels[:, i] for i in range(4))
    assert np.array_equal(pasted[visible], original[visible])
    assert np.array_equal(pasted[hidden], recon[hidden])
    assert np.array_equal(masked[visible], original[visible]) and (masked[hidden] == 127).all()
    # The original panel undoes the preprocessing: it is the resized photo itself.
    expected = np.asarray(Image.open(photos[0]).convert('RGB').resize((48, 32), Image.BICUBIC))
    assert np.abs(original[0].astype(int) - expected.astype(int)).max() <= 1


def _place_patches(values, rows, cols, p, channels):
    """(L, p*p*C) in (row-in-patch, col-in-patch, channel) order -> (C, rows*p, cols*p)."""
    out = np.zeros((channels, rows * p, cols * p), dtype=np.float64)
    for r in range(rows):
        for c in range(cols):
            patch = values[r * cols + c].reshape(p, p, channels).transpose(2, 0, 1)
            out[:, r * p:(r + 1) * p, c * p:(c + 1) * p] = patch
    return out


@pytest.mark.parametrize('norm_pix', [True, False])
def test_norm_pix_reconstruction_uses_the_target_patch_statistics(photos, norm_pix):
    model = MODELS.build(mae_cfg(norm_pix=norm_pix)).eval()
    imgs = load_images_for_model(model, photos[:2], (32, 48))
    noise = mask_noise(model, 2, (4, 6), seed=0)
    outputs, _ = reconstruct_with_seed(model, imgs, noise=noise)
    with torch.no_grad():
        _, pred, _ = model.forward_loss(imgs, noise)
    x, pred = imgs.double().numpy(), pred.double().numpy()
    for n in range(2):
        # Independently: each predicted patch times the std, plus the mean, of the true patch
        # (unbiased variance + 1e-6, as the norm-pix target), placed at its grid position.
        values = []
        for r in range(4):
            for c in range(6):
                true_patch = x[n, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8]
                mean, var = true_patch.mean(), true_patch.var(ddof=1)
                scale = np.sqrt(var + 1e-6) if norm_pix else 1.0
                values.append(pred[n, r * 6 + c] * scale + (mean if norm_pix else 0.0))
        expected = _place_patches(np.stack(values), 4, 6, 8, 3)
        np.testing.assert_allclose(outputs['reconstruction'][n].numpy(), expected, rtol=1e-5,
                                   atol=1e-4)


def test_mask_noise_is_reproducible_and_leaves_the_global_rng_alone():
    for strategy in ('random', 'block'):
        model = MODELS.build(mae_cfg(mask_strategy=strategy))
        torch.manual_seed(123)
        state = torch.get_rng_state()
        first = mask_noise(model, 2, (4, 4), seed=7)
        assert torch.equal(torch.get_rng_state(), state)
        torch.rand(5)  # a different global state must not change the mask
        assert torch.equal(mask_noise(model, 2, (4, 4), seed=7), first)
        assert not torch.equal(mask_noise(model, 2, (4, 4), seed=8), first)


def test_figure_array_is_the_saved_png_and_names_the_norm_pix_statistics(tmp_path, photos):
    model = MODELS.build(mae_cfg()).eval()
    _, panels = reconstruct_with_seed(model, load_images_for_model(model, photos, 32), seed=0)
    path = save_reconstruction_figure(panels, str(tmp_path / 'f.png'), title='t', norm_pix=True)
    with Image.open(path) as img:
        saved = np.asarray(img.convert('RGB'))
    assert np.array_equal(reconstruction_figure_array(panels, title='t', norm_pix=True), saved)
    texts = {True: None, False: None}
    for norm_pix in texts:
        fig = _render_figure(panels, 't', norm_pix, 100)
        texts[norm_pix] = fig._suptitle.get_text()
    assert NORM_PIX_NOTE in texts[True] and NORM_PIX_NOTE not in texts[False]


def _same_reconstruction(model_a, model_b, imgs):
    out_a, _ = reconstruct_with_seed(model_a, imgs, seed=1)
    out_b, _ = reconstruct_with_seed(model_b, imgs, seed=1)
    return all(torch.equal(out_a[k], out_b[k]) for k in out_a)


def test_models_rebuilt_from_stored_config_and_from_official_weights(photos):
    cfg = mae_cfg(norm_pix=True)
    model = MODELS.build(cfg).eval()
    imgs = load_images_for_model(model, photos, 32)
    # A Runner-style checkpoint: the config travels in meta['cfg'].
    stored = mae_mm_checkpoint(model.state_dict(),
                               meta=dict(cfg=Config(dict(model=cfg)).pretty_text))
    rebuilt, source = build_mae_from_checkpoint(stored)
    assert source == 'the config stored in the checkpoint' and rebuilt.head.norm_pix
    assert _same_reconstruction(model, rebuilt, imgs)
    # An official {'model': ...} file: settings read off the weights, norm_pix given.
    official = {'model': convert_state_dict(stored, 'official').state_dict}
    inferred = infer_mae_model_config(convert_state_dict(official, 'mae_mm').state_dict)
    assert inferred['backbone']['arch'] == cfg['backbone']['arch']
    assert (inferred['backbone']['img_size'], inferred['backbone']['patch_size']) == (32, 8)
    assert (inferred['neck']['decoder_embed_dim'], inferred['neck']['decoder_depth'],
            inferred['neck']['decoder_num_heads']) == (64, 1, 2)
    rebuilt, source = build_mae_from_checkpoint(official, norm_pix=True)
    assert source == 'inferred from the weights (official format)'
    assert _same_reconstruction(model, rebuilt, imgs)
    rebuilt_raw, _ = build_mae_from_checkpoint(official)  # default: raw-pixel target
    assert not rebuilt_raw.head.norm_pix


def test_checkpoints_that_cannot_reconstruct_fail_in_one_line(tmp_path):
    model = MODELS.build(mae_cfg())
    official = convert_state_dict(mae_mm_checkpoint(model.state_dict()), 'official').state_dict
    encoder_only = {'model': {k: v for k, v in official.items()
                              if not k.startswith(('decoder_', 'mask_token'))}}
    with pytest.raises(ValueError, match='no MAE decoder') as err:
        build_mae_from_checkpoint(encoder_only)
    assert '\n' not in str(err.value)
    classifier = Config(dict(model=dict(type='mmpretrain.ImageClassifier')))
    with pytest.raises(ValueError, match='not a MaskedAutoencoder'):
        build_mae_from_checkpoint({'model': official}, config=classifier)
    deeper = mae_cfg()
    deeper['neck']['decoder_depth'] = 2
    with pytest.raises(ValueError, match='does not fit the model from the given config') as err:
        build_mae_from_checkpoint({'model': official}, config=Config(dict(model=deeper)))
    assert '\n' not in str(err.value) and 'decoder_blocks.1' in str(err.value)


def test_official_vit_large_layout_is_inferred_with_the_papers_settings():
    """The keys/shapes of mae_visualize_vit_large.pth (mostly meta tensors: no download)."""
    def meta(*shape):
        return torch.empty(shape, device='meta')

    # Position tables are inspected by the conversion (orientation report): real ones.
    state = {'cls_token': meta(1, 1, 1024), 'pos_embed': torch.zeros(1, 197, 1024),
             'patch_embed.proj.weight': meta(1024, 3, 16, 16), 'patch_embed.proj.bias': meta(1024),
             'mask_token': meta(1, 1, 512), 'decoder_pos_embed': torch.zeros(1, 197, 512),
             'decoder_embed.weight': meta(512, 1024), 'decoder_pred.weight': meta(768, 512)}
    for i in range(24):
        state.update({f'blocks.{i}.attn.qkv.weight': meta(3072, 1024),
                      f'blocks.{i}.attn.qkv.bias': meta(3072),
                      f'blocks.{i}.mlp.fc1.weight': meta(4096, 1024)})
    for i in range(8):
        state[f'decoder_blocks.{i}.mlp.fc1.weight'] = meta(2048, 512)
    cfg = infer_mae_model_config(convert_state_dict({'model': state}, 'mae_mm').state_dict)
    assert cfg['backbone']['arch'] == dict(embed_dims=1024, num_layers=24, num_heads=16,
                                           feedforward_channels=4096)
    assert (cfg['backbone']['img_size'], cfg['backbone']['patch_size']) == (224, 16)
    assert cfg['backbone']['qkv_bias'] and not cfg['backbone']['mask_token_in_encoder']
    assert cfg['neck'] == dict(type='MAEDecoder', decoder_embed_dim=512, decoder_depth=8,
                               decoder_num_heads=16, mlp_ratio=4.0)
    assert cfg['head']['norm_pix'] is False  # the official visualization models: raw pixels
