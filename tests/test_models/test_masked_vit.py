"""MaskedViT: masking through the encoder, unmasked = plain ViT, options and errors."""
import pytest
import torch
import torch.nn.functional as F

from mae_mm.models import MaskedViT, resolve_arch
from mae_mm.models.layers import num_visible

from ..conftest import TINY_ARCH


def plain_vit_forward(sd, x, num_heads, patch_size, eps=1e-6):
    """A ViT forward written from the state dict alone (no mae_mm code)."""
    tokens = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                      stride=patch_size).flatten(2).transpose(1, 2)
    tokens = tokens + sd['pos_embed'][:, 1:]
    cls = (sd['cls_token'] + sd['pos_embed'][:, :1]).expand(x.shape[0], -1, -1)
    h = torch.cat([cls, tokens], 1)
    n, length, dim = h.shape
    i = 0
    while f'blocks.{i}.norm1.weight' in sd:
        p = f'blocks.{i}.'
        y = F.layer_norm(h, (dim, ), sd[p + 'norm1.weight'], sd[p + 'norm1.bias'], eps)
        qkv = F.linear(y, sd[p + 'attn.qkv.weight'], sd[p + 'attn.qkv.bias'])
        q, k, v = qkv.reshape(n, length, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / (dim // num_heads)**0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(n, length, dim)
        h = h + F.linear(y, sd[p + 'attn.proj.weight'], sd[p + 'attn.proj.bias'])
        y = F.layer_norm(h, (dim, ), sd[p + 'norm2.weight'], sd[p + 'norm2.bias'], eps)
        y = F.linear(F.gelu(F.linear(y, sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias'])),
                     sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
        h = h + y
        i += 1
    return F.layer_norm(h, (dim, ), sd['norm.weight'], sd['norm.bias'], eps)


def tiny_vit(**kwargs):
    kwargs.setdefault('img_size', 32)
    kwargs.setdefault('patch_size', 8)
    return MaskedViT(arch=TINY_ARCH, **kwargs).eval()


@pytest.mark.parametrize('unmask', [dict(mask=False), dict(ratio0=True)])
def test_unmasked_equals_plain_vit(unmask):
    ratio = 0.0 if unmask.get('ratio0') else 0.75
    model = tiny_vit(mask_ratio=ratio)
    x = torch.randn(2, 3, 32, 32)
    out = model(x, mask=unmask.get('mask'))
    assert isinstance(out, tuple) and out[0].shape == (2, 17, 64)
    expected = plain_vit_forward(model.state_dict(), x, 4, 8)
    torch.testing.assert_close(out[0], expected, rtol=1e-5, atol=1e-5)


def test_masked_encoder_sees_only_visible_patches():
    model = tiny_vit(mask_ratio=0.75)
    x = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, 16)
    latent, mask, ids_restore = model(x, mask=True, noise=noise)
    assert latent.shape == (3, 1 + num_visible(16, 0.75), 64)
    assert torch.all(mask.sum(1) == 12)
    # The latent equals a plain ViT run on [cls + the kept patches] (their positions included).
    sd = model.state_dict()
    tokens = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                      stride=8).flatten(2).transpose(1, 2) + sd['pos_embed'][:, 1:]
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first len_keep are kept
    keep = ids_shuffle[:, :4]
    visible = torch.stack([tokens[i, keep[i]] for i in range(3)])
    assert torch.equal(mask, torch.ones(3, 16).scatter(1, keep, 0.0))
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(16).expand(3, -1))
    h = torch.cat([(sd['cls_token'] + sd['pos_embed'][:, :1]).expand(3, -1, -1), visible], 1)
    for block in model.blocks:
        h = block(h)
    torch.testing.assert_close(latent, model.norm(h))


def test_noise_reproduces_mask_and_random_masks_differ():
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    a = model(x, mask=True, noise=noise)
    b = model(x, mask=True, noise=noise.clone())
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    _, m1, _ = model(x, mask=True)
    _, m2, _ = model(x, mask=True)
    assert not torch.equal(m1, m2)


def test_rectangular_and_other_sizes():
    model = tiny_vit(img_size=(32, 48))
    latent, mask, _ = model(torch.randn(2, 3, 32, 48), mask=True)
    assert mask.shape == (2, 24) and latent.shape == (2, 1 + 6, 64)
    # A size other than img_size resamples the position table on the grid.
    feats = model(torch.randn(1, 3, 64, 40), mask=False)[0]
    assert feats.shape == (1, 1 + 8 * 5, 64)


@pytest.mark.parametrize('out_type,shape', [('raw', (2, 17, 64)), ('cls_token', (2, 64)),
                                            ('featmap', (2, 64, 4, 4)),
                                            ('avg_featmap', (2, 64))])
def test_out_types(out_type, shape):
    model = tiny_vit(out_type=out_type, out_indices=(0, 1))
    outs = model(torch.randn(2, 3, 32, 32), mask=False)
    assert len(outs) == 2 and all(o.shape == shape for o in outs)


def test_avg_featmap_is_fc_norm_of_mean_patch_token():
    model = tiny_vit(out_type='avg_featmap', final_norm=False)
    raw = tiny_vit(out_type='raw', final_norm=False)
    raw.load_state_dict(model.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    tokens = raw(x, mask=False)[0]
    torch.testing.assert_close(model(x, mask=False)[0], model.fc_norm(tokens[:, 1:].mean(1)))


def test_mask_token_in_encoder_runs_on_all_tokens():
    model = tiny_vit(mask_token_in_encoder=True)
    latent, mask, ids_restore = model(torch.randn(2, 3, 32, 32), mask=True)
    assert latent.shape == (2, 17, 64) and torch.all(mask.sum(1) == 12)
    assert torch.equal(ids_restore[0], torch.arange(16))


def test_frozen_stages_and_drop_path():
    model = tiny_vit(frozen_stages=1, drop_path_rate=0.1).train()
    assert not model.patch_embed.proj.weight.requires_grad
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert not model.blocks[0].training and model.blocks[1].training
    assert model.blocks[1].drop_path.drop_prob == pytest.approx(0.1)


def test_pos_embed_is_fixed_in_pretraining():
    assert not tiny_vit().pos_embed.requires_grad
    assert tiny_vit(pos_embed_trainable=True).pos_embed.requires_grad


@pytest.mark.parametrize('kwargs,message', [
    (dict(img_size=30), 'not divisible by patch_size'),
    (dict(mask_ratio=1.0), 'outside'),
    (dict(out_type='tokens'), 'out_type'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vit(**kwargs)


def test_arch_presets_and_unknown_arch():
    assert resolve_arch('l') == resolve_arch('large')
    assert resolve_arch('l')['embed_dims'] == 1024 and resolve_arch('huge')['num_layers'] == 32
    assert resolve_arch(dict(embed_dims=64, num_layers=1, num_heads=2, mlp_ratio=2)) == dict(
        embed_dims=64, num_layers=1, num_heads=2, feedforward_channels=128)
    with pytest.raises(ValueError, match="arch='xl' is unknown"):
        MaskedViT(arch='xl')
    with pytest.raises(ValueError, match='not divisible by patch_size'):
        tiny_vit()(torch.randn(1, 3, 36, 32), mask=False)
