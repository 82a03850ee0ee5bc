"""The training step's machinery against independent computations: the attention kernel, the
``model.compile`` option, the fused AdamW option and the FLOPs the benchmark counts."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from torch.utils.flop_counter import FlopCounterMode

from mae_mm.models.layers import Attention
from mae_mm.registry import MODELS

from ..conftest import TINY_ARCH, tiny_mae_cfg, tiny_pretrain_cfg


@pytest.mark.parametrize('bias', [None, 'fixed', 'trained'])
def test_attention_equals_explicit_softmax_attention(bias):
    """Values and gradients equal ``softmax(q k^T / sqrt(d) + bias) v`` written out, with no
    bias, a fixed additive bias and one that needs a gradient (ViTDet's relative positions)."""
    torch.manual_seed(0)
    attn = Attention(32, 4)
    x = torch.randn(2, 9, 32, requires_grad=True)
    attn_bias = None if bias is None else torch.randn(2, 4, 9, 9, requires_grad=bias == 'trained')
    out = attn(x, attn_bias)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(2, 9, 3, 4, 8).permute(
        2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / math.sqrt(8)
    if attn_bias is not None:
        logits = logits + attn_bias
    expected = F.linear((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 9, 32),
                        attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    inputs = [x, *attn.parameters()] + ([attn_bias] if bias == 'trained' else [])
    grads = torch.autograd.grad(out.square().sum(), inputs)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fused_adamw_option_matches_the_configs_plain_adamw(tmp_path, photo_folder):
    """The documented option ``optim_wrapper.optimizer.fused=True`` makes the same update as the
    pretraining config's AdamW (torch's default implementation, as the references) with the
    same parameter groups."""
    cfg = tiny_pretrain_cfg(photo_folder, tmp_path)
    assert 'fused' not in cfg.optim_wrapper.optimizer  # the reference default
    model = MODELS.build(tiny_mae_cfg())
    twin = copy.deepcopy(model)
    plain = build_optim_wrapper(twin, copy.deepcopy(cfg.optim_wrapper))
    cfg.merge_from_dict({'optim_wrapper.optimizer.fused': True})
    fused = build_optim_wrapper(model, cfg.optim_wrapper)
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
    assert compiled._compiled_forward_loss is not None
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for key, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], grad, rtol=1e-4, atol=1e-6, msg=key)
    with pytest.raises(TypeError, match='model.compile'):
        MODELS.build(dict(tiny_mae_cfg(), compile='yes'))


def test_counted_step_flops_match_the_formula():
    """The matmul and convolution FLOPs that ``FlopCounterMode`` (the benchmark's counter)
    counts for one forward + backward equal MAE's formula: the convolution embeds all L patches
    (forward, and the weight gradient only: images need none); the encoder blocks run on the
    V + 1 visible tokens, the decoder blocks and prediction on all L + 1 tokens; every Linear
    costs 3x its forward (forward, input and weight gradients)."""
    model = MODELS.build(tiny_mae_cfg())
    n, length, visible = 2, 16, 4
    imgs, noise = torch.randn(n, 3, 32, 32), torch.rand(n, length)
    with FlopCounterMode(display=False) as counter:
        model.forward_loss(imgs, noise)[0].backward()
    ops = ('convolution', 'convolution_backward', 'addmm', 'mm')
    counted = sum(flops for op, flops in counter.get_flop_counts()['Global'].items()
                  if op.__name__.split('.')[0] in ops)
    dim, hidden, patch_dim = TINY_ARCH['embed_dims'], TINY_ARCH['feedforward_channels'], 192
    d_dim, d_hidden = 32, 128

    def linear(tokens, width_in, width_out):
        return 3 * 2 * n * tokens * width_in * width_out

    def block(tokens, width, mlp):
        return linear(tokens, width, 3 * width) + linear(tokens, width, width) + \
            linear(tokens, width, mlp) + linear(tokens, mlp, width)

    expected = (2 * 2 * n * length * patch_dim * dim
                + TINY_ARCH['num_layers'] * block(visible + 1, dim, hidden)
                + linear(visible + 1, dim, d_dim) + block(length + 1, d_dim, d_hidden)
                + linear(length + 1, d_dim, patch_dim))
    assert counted == expected
