"""Loss, target and the MaskedAutoencoder algorithm against the formulas."""
import pytest
import torch

from mae_mm.models import NormalizedPixelLoss, PixelReconstructionHead
from mae_mm.registry import MODELS

from ..conftest import tiny_mae_cfg


def test_loss_equals_formula_and_ignores_visible_patches():
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 6, requires_grad=True)
    target = torch.randn(2, 5, 6)
    mask = torch.tensor([[1., 0, 1, 0, 0], [0, 1, 1, 1, 0]])
    loss = NormalizedPixelLoss()(pred, target, mask)
    # Direct recomputation: mean over masked patches of the per-patch mean squared error.
    errors = [((pred[b, i] - target[b, i])**2).mean() for b in range(2) for i in range(5)
              if mask[b, i] == 1]
    torch.testing.assert_close(loss, torch.stack(errors).mean())
    loss.backward()
    assert torch.all(pred.grad[mask == 0] == 0)
    assert torch.all(pred.grad[mask == 1].abs().sum(-1) > 0)
    l1 = NormalizedPixelLoss('L1')(pred, target, mask)
    l1_ref = torch.stack([(pred[b, i] - target[b, i]).abs().mean() for b in range(2)
                          for i in range(5) if mask[b, i] == 1]).mean()
    torch.testing.assert_close(l1, l1_ref)
    with pytest.raises(ValueError, match='criterion'):
        NormalizedPixelLoss('L3')


def test_norm_pix_target_statistics():
    imgs = torch.rand(2, 3, 8, 8) * 5 + 2
    head = PixelReconstructionHead(patch_size=4, norm_pix=True)
    target = head.construct_target(imgs)
    assert target.shape == (2, 4, 48)
    # Each target patch: mean 0 and unbiased variance var/(var + eps), i.e. ~1.
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(2, 4), atol=1e-4, rtol=0)
    # The patch (row 0, col 1) normalised by hand.
    patch = imgs[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1)
    expected = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
    torch.testing.assert_close(target[0, 1], expected)
    raw = PixelReconstructionHead(patch_size=4, norm_pix=False).construct_target(imgs)
    assert torch.equal(raw[0, 1], patch)


def test_mae_loss_is_head_of_decoder_of_encoder():
    model = MODELS.build(tiny_mae_cfg())
    imgs = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    loss, pred, mask = model.forward_loss(imgs, noise)
    latent, mask_ref, ids = model.backbone(imgs, mask=True, noise=noise)
    pred_ref = model.neck(latent, ids)
    assert pred.shape == (2, 16, 8 * 8 * 3) and torch.equal(mask, mask_ref)
    torch.testing.assert_close(pred, pred_ref)
    torch.testing.assert_close(
        loss, NormalizedPixelLoss()(pred_ref, model.head.construct_target(imgs), mask_ref))


def test_decoder_unshuffles_into_original_order():
    """The decoder input at position i is the latent of patch i (visible) or the mask token."""
    model = MODELS.build(tiny_mae_cfg())
    neck = model.neck
    latent = torch.randn(1, 1 + 4, 64)
    noise = torch.rand(1, 16)
    ids_shuffle = torch.argsort(noise, 1)
    ids_restore = torch.argsort(ids_shuffle, 1)
    captured = {}
    neck.decoder_blocks[0].register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    neck(latent, ids_restore)
    x = captured['x'][0, 1:] - neck.decoder_pos_embed[0, 1:]
    projected = neck.decoder_embed(latent)[0]
    for rank, patch in enumerate(ids_shuffle[0].tolist()):
        expected = projected[1 + rank] if rank < 4 else neck.mask_token[0, 0]
        torch.testing.assert_close(x[patch], expected)


def test_decoder_and_head_derive_from_backbone():
    model = MODELS.build(tiny_mae_cfg(img_size=(32, 48), patch_size=8))
    assert model.neck.grid_size == (4, 6) and model.head.patch_size == 8
    assert model.neck.decoder_embed.in_features == 64
    loss = model.loss(torch.randn(2, 3, 32, 48))['loss']
    assert torch.isfinite(loss)
    cfg = tiny_mae_cfg()
    cfg['neck']['grid_size'] = 14
    with pytest.raises(ValueError, match=r'neck.grid_size=14 disagrees with the backbone'):
        MODELS.build(cfg)
    cfg = tiny_mae_cfg()
    cfg['head']['patch_size'] = 16
    with pytest.raises(ValueError, match='head.patch_size'):
        MODELS.build(cfg)
    with pytest.raises(ValueError, match='mask_ratio must be in'):
        MODELS.build(tiny_mae_cfg(mask_ratio=0.0))
    cfg = tiny_mae_cfg()
    cfg['neck']['num_patches'] = 196  # copied from an mmpretrain config
    with pytest.raises(ValueError, match=r'neck.num_patches=196 disagrees .* 4x4 grid'):
        MODELS.build(cfg)
    cfg['neck']['num_patches'] = 16  # consistent: accepted
    assert MODELS.build(cfg).neck.grid_size == (4, 4)


def test_reconstruct_pastes_visible_patches_exactly():
    model = MODELS.build(tiny_mae_cfg(img_size=(32, 48))).eval()
    imgs = torch.randn(2, 3, 32, 48)
    out = model.reconstruct(imgs, noise=torch.rand(2, 24))
    visible = out['mask'] == 0
    assert torch.equal(out['pasted'].masked_select(visible), imgs.masked_select(visible))
    assert torch.equal(out['masked_input'].masked_select(~visible),
                       torch.zeros(int((~visible).sum()) * 3))
    hidden = (~visible).expand_as(imgs)
    assert torch.equal(out['pasted'][hidden], out['reconstruction'][hidden])


def test_training_lowers_the_loss_on_a_fixed_batch():
    model = MODELS.build(tiny_mae_cfg())
    # Smooth images, so that hidden patches are predictable from visible ones.
    imgs = torch.nn.functional.interpolate(torch.randn(4, 3, 3, 3), size=(32, 32),
                                           mode='bilinear', align_corners=True)
    noise = torch.rand(4, 16)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss, _, _ = model.forward_loss(imgs, noise)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
