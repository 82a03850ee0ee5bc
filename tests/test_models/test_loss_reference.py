"""The pretraining loss and every gradient against an independent MAE written in this file.

The reference reads only the model's state dict and uses plain functional ops: a strided
convolution for the patch embedding, LayerNorm, Linear, explicit ``softmax(q k^T / sqrt(d)) v``
attention and GELU; it keeps the ``len_keep = int(L * (1 - r))`` patches of lowest noise, decodes
ALL patches and averages the per-patch mean squared error over the masked ones. Both sides get
the same weights and the same noise; for strategies whose noise the model makes, the noise is
drawn once from the model and passed to both.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub
from mmengine.structures import BaseDataElement

from mae_mm.registry import MODELS

from ..conftest import TINY_ARCH

PATCH, HEADS, DECODER_HEADS, EPS = 8, TINY_ARCH['num_heads'], 4, 1e-6


def build(img_size=32, decoder_depth=1, norm_pix=True, mask_seed=None, **backbone):
    return MODELS.build(dict(
        type='MaskedAutoencoder', mask_seed=mask_seed,
        backbone=dict(type='MaskedViT', arch=TINY_ARCH, img_size=img_size, patch_size=PATCH,
                      **backbone),
        neck=dict(type='MAEDecoder', decoder_embed_dim=32, decoder_depth=decoder_depth,
                  decoder_num_heads=DECODER_HEADS),
        head=dict(type='PixelReconstructionHead', norm_pix=norm_pix)))


def ref_block(x, p, prefix, heads):
    """One pre-norm Transformer block from the state dict ``p``."""
    n, length, dim = x.shape
    y = F.layer_norm(x, (dim, ), p[prefix + 'norm1.weight'], p[prefix + 'norm1.bias'], EPS)
    qkv = F.linear(y, p[prefix + 'attn.qkv.weight'], p[prefix + 'attn.qkv.bias'])
    q, k, v = qkv.reshape(n, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads), dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(n, length, dim)
    x = x + F.linear(y, p[prefix + 'attn.proj.weight'], p[prefix + 'attn.proj.bias'])
    y = F.layer_norm(x, (dim, ), p[prefix + 'norm2.weight'], p[prefix + 'norm2.bias'], EPS)
    y = F.linear(F.gelu(F.linear(y, p[prefix + 'mlp.fc1.weight'], p[prefix + 'mlp.fc1.bias'])),
                 p[prefix + 'mlp.fc2.weight'], p[prefix + 'mlp.fc2.bias'])
    return x + y


def blocks(x, p, prefix, heads):
    i = 0
    while f'{prefix}{i}.norm1.weight' in p:
        x = ref_block(x, p, f'{prefix}{i}.', heads)
        i += 1
    return x


def reference_loss(p, imgs, noise, mask_ratio=0.75, norm_pix=True, mask_token_in_encoder=False):
    """MAE's loss from the state dict ``p``; returns ``(loss, mask)``."""
    n, c, height, width = imgs.shape
    rows, cols = height // PATCH, width // PATCH
    length = rows * cols
    dim = p['backbone.cls_token'].shape[-1]
    # Encoder: embed every patch, add positions, keep the lowest noise.
    tokens = F.conv2d(imgs, p['backbone.patch_embed.proj.weight'],
                      p['backbone.patch_embed.proj.bias'], stride=PATCH)
    tokens = tokens.flatten(2).transpose(1, 2) + p['backbone.pos_embed'][:, 1:]
    len_keep = int(length * (1 - mask_ratio))
    keep = noise.argsort(dim=1)[:, :len_keep]
    mask = torch.ones(n, length).scatter(1, keep, 0.0)
    if mask_token_in_encoder:
        masked_token = p['backbone.mask_token'] + p['backbone.pos_embed'][:, 1:]
        encoder_in = torch.where(mask[..., None] == 1, masked_token, tokens)
        positions = torch.arange(length).expand(n, -1)
    else:
        encoder_in = torch.stack([tokens[i, keep[i]] for i in range(n)])
        positions = keep
    cls = p['backbone.cls_token'] + p['backbone.pos_embed'][:, :1]
    x = torch.cat([cls.expand(n, -1, -1), encoder_in], dim=1)
    x = blocks(x, p, 'backbone.blocks.', HEADS)
    x = F.layer_norm(x, (dim, ), p['backbone.norm.weight'], p['backbone.norm.bias'], EPS)
    # Decoder: every patch, encoded ones at their position, the mask token elsewhere.
    z = F.linear(x, p['neck.decoder_embed.weight'], p['neck.decoder_embed.bias'])
    decoder_dim = z.shape[-1]
    patches = torch.stack([
        p['neck.mask_token'][0, 0].expand(length, -1).index_put((positions[i], ), z[i, 1:])
        for i in range(n)
    ])
    x = torch.cat([z[:, :1], patches], dim=1) + p['neck.decoder_pos_embed']
    x = blocks(x, p, 'neck.decoder_blocks.', DECODER_HEADS)
    x = F.layer_norm(x, (decoder_dim, ), p['neck.decoder_norm.weight'],
                     p['neck.decoder_norm.bias'], EPS)
    pred = F.linear(x, p['neck.decoder_pred.weight'], p['neck.decoder_pred.bias'])[:, 1:]
    # Target: patch (row, col) flattened as (row-in-patch, col-in-patch, channel).
    target = imgs.reshape(n, c, rows, PATCH, cols, PATCH).permute(0, 2, 4, 3, 5, 1)
    target = target.reshape(n, length, PATCH * PATCH * c)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True, unbiased=True)
        target = (target - mean) / (var + 1e-6)**0.5
    per_patch = ((pred - target)**2).mean(dim=-1)  # (N, L)
    return (per_patch * mask).sum() / mask.sum(), mask


def reference_loss_and_grads(model, imgs, noise, **kwargs):
    """The reference's loss, mask and the gradient of every parameter the model trains."""
    trained = [k for k, v in model.named_parameters() if v.requires_grad]
    params = {k: v.detach().clone().requires_grad_(k in trained)
              for k, v in model.state_dict().items()}
    loss, mask = reference_loss(params, imgs, noise, **kwargs)
    loss.backward()
    return loss.detach(), mask, {k: params[k].grad for k in trained}


def assert_same_loss_and_grads(model, loss, ref_loss, ref_grads):
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-5, atol=1e-6)
    grads = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert grads.keys() == ref_grads.keys()
    for key, ref in ref_grads.items():
        assert grads[key] is not None, key
        torch.testing.assert_close(grads[key], ref, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize('img_size,decoder_depth,norm_pix', [
    (32, 1, True), ((32, 48), 2, False), (32, 0, True), ((32, 48), 1, True)])
def test_loss_of_random_masking(img_size, decoder_depth, norm_pix):
    """``model.loss()`` with the global RNG: its noise is the official ``torch.rand(N, L)``."""
    model = build(img_size, decoder_depth, norm_pix)
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    imgs = torch.randn(3, 3, h, w)
    torch.manual_seed(11)
    noise = torch.rand(3, (h // PATCH) * (w // PATCH))
    ref_loss, _, ref_grads = reference_loss_and_grads(model, imgs, noise, norm_pix=norm_pix)
    torch.manual_seed(11)
    loss = model.loss(imgs)['loss']
    assert_same_loss_and_grads(model, loss, ref_loss, ref_grads)


@pytest.mark.parametrize('backbone', [
    dict(mask_strategy='block', min_block_patches=4), dict(mask_strategy='grid'),
    dict(mask_strategy='random', mask_ratio=0.6)])
def test_forward_loss_of_model_noise(backbone):
    """Block and grid masking (and another ratio) on a 32x48 image: the noise is the model's;
    the mask the model returns is the one recomputed from that noise."""
    model = build((32, 48), **backbone)
    imgs = torch.randn(2, 3, 32, 48)
    noise = model.backbone.make_noise(2, (4, 6), torch.device('cpu'))
    ratio = backbone.get('mask_ratio', 0.75)
    ref_loss, ref_mask, ref_grads = reference_loss_and_grads(model, imgs, noise,
                                                             mask_ratio=ratio)
    loss, _, mask = model.forward_loss(imgs, noise)
    assert torch.equal(mask, ref_mask)
    assert mask.sum().item() == 2 * (24 - int(24 * (1 - ratio)))
    assert_same_loss_and_grads(model, loss, ref_loss, ref_grads)


@pytest.mark.parametrize('decoder_depth', [0, 1])
def test_mask_token_in_encoder_scores_masked_patches_only(decoder_depth):
    """The Table 1c ablation: encoder on all tokens (masked ones = [M] + position), loss over
    the masked patches only; ``mask`` is the real mask and ``ids_restore`` the identity."""
    model = build(mask_token_in_encoder=True, decoder_depth=decoder_depth)
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    ref_loss, ref_mask, ref_grads = reference_loss_and_grads(model, imgs, noise,
                                                             mask_token_in_encoder=True)
    _, mask, ids_restore = model.backbone(imgs, mask=True, noise=noise)
    assert torch.equal(mask, ref_mask) and mask.sum().item() == 2 * 12
    assert torch.equal(ids_restore, torch.arange(16).expand(2, -1))
    assert_same_loss_and_grads(model, model.forward_loss(imgs, noise)[0], ref_loss, ref_grads)
    assert 'backbone.mask_token' in ref_grads


def test_mask_seed_noise_through_loss():
    """``mask_seed``: ``loss()`` draws the seeded noise itself; the reference gets the noise of
    ``_seeded_noise``, which depends only on (seed, iteration, sample_idx)."""
    model = build(mask_seed=3)
    imgs = torch.randn(2, 3, 32, 32)
    samples = [BaseDataElement(metainfo=dict(sample_idx=i)) for i in (7, 2)]
    hub = MessageHub.get_current_instance()
    previous = hub.get_info('iter', 0)
    hub.update_info('iter', 4)
    try:
        noise = model._seeded_noise(imgs, samples)
        torch.manual_seed(123)  # the global stream plays no part
        assert torch.equal(model._seeded_noise(imgs, samples), noise)
        assert torch.equal(model._seeded_noise(imgs, samples[1:])[0], noise[1])
        ref_loss, ref_mask, ref_grads = reference_loss_and_grads(model, imgs, noise)
        assert torch.equal(model.backbone(imgs, mask=True, noise=noise)[1], ref_mask)
        loss = model.loss(imgs, samples)['loss']
    finally:
        hub.update_info('iter', previous)
    assert_same_loss_and_grads(model, loss, ref_loss, ref_grads)
