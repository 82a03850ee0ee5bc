"""Speed-ups of the pretraining step keep its numbers: each against the plain path."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper

from mae_mm.models.backbones.masked_vit import PatchEmbed
from mae_mm.registry import MODELS

from ..conftest import tiny_mae_cfg, tiny_pretrain_cfg


class ConvPatchEmbed(PatchEmbed):
    """Same module and weights; another type, so MaskedViT takes the plain conv-then-drop path."""


def _fast_and_plain(**backbone):
    fast = MODELS.build(tiny_mae_cfg(**backbone))
    plain = copy.deepcopy(fast)
    plain.backbone.patch_embed.__class__ = ConvPatchEmbed
    return fast, plain


@pytest.mark.parametrize('img_size', [32, (32, 48)])
def test_embedding_only_visible_patches_matches_conv_then_drop(img_size):
    """Loss, prediction, mask and every gradient equal the plain path's in fp32."""
    fast, plain = _fast_and_plain(img_size=img_size)
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    imgs = torch.randn(3, 3, h, w)
    noise = torch.rand(3, (h // 8) * (w // 8))
    outputs = []
    for model in (fast, plain):
        loss, pred, mask = model.forward_loss(imgs, noise)
        loss.backward()
        outputs.append((loss, pred, mask, {k: p.grad for k, p in model.named_parameters()
                                           if p.grad is not None}))
    (loss_f, pred_f, mask_f, grads_f), (loss_p, pred_p, mask_p, grads_p) = outputs
    assert torch.equal(mask_f, mask_p)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pred_f, pred_p, rtol=1e-4, atol=1e-5)
    assert grads_f.keys() == grads_p.keys() and 'backbone.patch_embed.proj.weight' in grads_f
    for key in grads_f:
        torch.testing.assert_close(grads_f[key], grads_p[key], rtol=1e-4, atol=1e-6, msg=key)


def test_visible_tokens_are_the_convolution_tokens():
    """Independent recomputation: conv over the whole image, add positions, keep the lowest
    noise; the encoder's first block sees exactly those tokens."""
    model = MODELS.build(tiny_mae_cfg()).backbone
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    _, mask, _ = model(imgs, mask=True, noise=noise)
    conv = F.conv2d(imgs, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=8)
    tokens = conv.flatten(2).transpose(1, 2) + model.pos_embed[:, 1:]
    keep = noise.argsort(dim=1)[:, :4]
    expected = torch.stack([tokens[i, keep[i]] for i in range(2)])
    torch.testing.assert_close(seen[0][:, 1:], expected, rtol=1e-5, atol=1e-6)
    assert mask.sum(dim=1).tolist() == [12.0, 12.0]


def test_same_seed_same_mask_as_plain_path():
    """Noise is drawn before the embedding in both paths: a seed gives the same mask."""
    fast, plain = _fast_and_plain()
    imgs = torch.randn(2, 3, 32, 32)
    masks = []
    for model in (fast, plain):
        torch.manual_seed(7)
        masks.append(model.backbone(imgs, mask=True)[1])
    assert torch.equal(*masks)


def test_fused_adamw_of_the_config_matches_plain_adamw(tmp_path, photo_folder):
    """The pretraining config's AdamW (fused kernel) makes the same update as torch's default
    AdamW with the same parameter groups."""
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path)
    assert cfg.optim_wrapper.optimizer.get('fused') is True
    model = MODELS.build(tiny_mae_cfg())
    twin = copy.deepcopy(model)
    fused = build_optim_wrapper(model, cfg.optim_wrapper)
    plain_cfg = copy.deepcopy(cfg.optim_wrapper)
    plain_cfg.optimizer.pop('fused')
    plain = build_optim_wrapper(twin, plain_cfg)
    assert fused.optimizer.defaults['fused'] and not plain.optimizer.defaults['fused']
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    for _ in range(3):
        # The same gradients for both (the key bias has a mathematically zero gradient whose
        # float noise Adam would amplify differently from two separate backward passes).
        fused.zero_grad()
        plain.zero_grad()
        model.forward_loss(imgs, noise)[0].backward()
        for a, b in zip(model.parameters(), twin.parameters()):
            if a.grad is not None:
                b.grad = a.grad.clone()
        fused.step()
        plain.step()
    for (key, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)


def test_forward_loss_compiles_without_graph_breaks():
    """The whole forward (masking, encoder, decoder, loss) is one graph for torch.compile."""
    model = MODELS.build(tiny_mae_cfg())
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    compiled = torch.compile(model.forward_loss, fullgraph=True, backend='eager')
    torch.testing.assert_close(compiled(imgs, noise)[0], model.forward_loss(imgs, noise)[0])

