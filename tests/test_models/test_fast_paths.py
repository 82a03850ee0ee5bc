"""Speed-ups of the pretraining step keep its numbers: each against the plain path."""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper

from mae_mm.models.backbones.masked_vit import PatchEmbed
from mae_mm.models.layers.attention import (CPU_EXPLICIT_ATTENTION_MAX_TOKENS,
                                            scaled_dot_product_attention)
from mae_mm.registry import MODELS

from ..conftest import TINY_ARCH, tiny_mae_cfg, tiny_pretrain_cfg


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



@pytest.mark.parametrize('length', [5, 50, 130])  # explicit (<= 128 tokens) and flash paths
def test_attention_kernels_match_sdpa_in_fp32(length):
    """Values and gradients equal ``F.scaled_dot_product_attention``'s, with a fixed bias, a
    bias that needs a gradient, and none, on both sides of the explicit/flash threshold."""
    assert CPU_EXPLICIT_ATTENTION_MAX_TOKENS == 128  # the lengths straddle it
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, length, 16, requires_grad=True) for _ in range(3))
    for attn_bias in (None, torch.randn(2, 3, length, length),
                      torch.randn(1, 3, length, length, requires_grad=True)):
        inputs = (q, k, v) if attn_bias is None or not attn_bias.requires_grad \
            else (q, k, v, attn_bias)
        out = scaled_dot_product_attention(q, k, v, attn_bias)
        grads = torch.autograd.grad(out.square().sum(), inputs)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('length', [50, 130])
def test_attention_under_bf16_autocast_is_fp32_and_saves_only_bf16(length):
    """Under CPU autocast the result has the inputs' dtype but fp32 accuracy (closer to the
    fp32 attention of the same inputs than bf16 rounding itself), and the tensors kept for
    the backward pass are bf16: no fp32 copy of q, k, v is held (memory)."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 4, length, 16).bfloat16().requires_grad_() for _ in range(3))
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = scaled_dot_product_attention(q, k, v)
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() <= (reference.bfloat16().float()
                                                     - reference).abs().max()
    big = [t for t in saved if t.numel() >= q.numel()]
    assert big and all(t.dtype == torch.bfloat16 for t in big), [t.dtype for t in big]
    out.float().square().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_compile_option_gives_the_eager_masks_losses_and_gradients():
    """``model.compile=True``: the first loss() compiles; for the same seed the masks (drawn
    outside the graph), the loss and every gradient are the eager model's."""
    eager = MODELS.build(tiny_mae_cfg())
    compiled = MODELS.build(dict(tiny_mae_cfg(), compile=dict(backend='aot_eager')))
    compiled.load_state_dict(eager.state_dict())
    imgs = torch.randn(2, 3, 32, 32)
    results = []
    for model in (eager, compiled):
        torch.manual_seed(3)
        loss = model.loss(imgs)['loss']
        loss.backward()
        results.append((loss, {k: p.grad for k, p in model.named_parameters()
                               if p.grad is not None}))
    assert compiled._compiled_training_loss is not None
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for key, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], grad, rtol=1e-4, atol=1e-6, msg=key)
    with pytest.raises(TypeError, match='model.compile'):
        MODELS.build(dict(tiny_mae_cfg(), compile='yes'))


@pytest.mark.parametrize('decoder_depth', [0, 1, 2])
def test_masked_only_decoding_matches_the_full_loss(decoder_depth):
    """``training_loss`` (last decoder block, norm and prediction on the masked tokens only)
    gives forward_loss's loss and every gradient in fp32, for the same noise."""
    cfg = tiny_mae_cfg()
    cfg['neck']['decoder_depth'] = decoder_depth
    model = MODELS.build(cfg)
    imgs, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 16)
    results = []
    for fn in (model.training_loss, lambda *a: model.forward_loss(*a)[0]):
        model.zero_grad()
        loss = fn(imgs, noise)
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                                        if p.grad is not None}))
    (fast, fast_grads), (full, full_grads) = results
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert fast_grads.keys() == full_grads.keys()
    for key in full_grads:
        torch.testing.assert_close(fast_grads[key], full_grads[key], rtol=1e-4, atol=1e-6,
                                   msg=key)


def test_block_rows_output_is_the_gathered_full_output():
    """Independent check of ``Block(x, rows)``: the full block's output at those rows."""
    from mae_mm.models.layers import Block
    block = Block(16, 4, 32)
    x, rows = torch.randn(2, 9, 16), torch.tensor([[0, 4, 8], [7, 1, 2]])
    expected = torch.stack([block(x)[i, rows[i]] for i in range(2)])
    torch.testing.assert_close(block(x, rows=rows), expected, rtol=1e-5, atol=1e-6)


def _step_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn().backward()
    return counter.get_total_flops()


def test_flops_saved_by_the_fast_paths_match_the_formulas():
    """Counted FLOPs of one forward + backward, against the work each fast path skips.

    Visible-only embedding: forward and weight gradient of the patch projection for the
    L - V masked patches, 2 * 2 * (L - V) * p^2 C * D per image. Masked-only last decoder
    block: for the V + 1 unread tokens (visible + cls), the projection, the MLP and the
    prediction (forward, input and weight gradients: 3 matmuls each) and their attention
    queries (2 matmuls forward; 5 backward, which recomputes the probabilities), per image."""
    fast, plain = _fast_and_plain()
    imgs, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    length, visible, dim, patch_dim = 16, 4, TINY_ARCH['embed_dims'], 8 * 8 * 3
    embed = 2 * 2 * (length - visible) * patch_dim * dim
    counted = (_step_flops(lambda: plain.forward_loss(imgs, noise)[0])
               - _step_flops(lambda: fast.forward_loss(imgs, noise)[0])) / 2
    assert counted == embed
    d, hidden, skipped, tokens = 32, 128, visible + 1, length + 1
    linear = 3 * 2 * skipped * (d * d + 2 * d * hidden + d * patch_dim)
    attention = (2 + 5) * 2 * skipped * tokens * d
    counted = (_step_flops(lambda: fast.forward_loss(imgs, noise)[0])
               - _step_flops(lambda: fast.training_loss(imgs, noise))) / 2
    assert counted == linear + attention
