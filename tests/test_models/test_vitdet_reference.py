"""ViTDetBackbone + SimpleFeaturePyramid against the ViTDet reference's semantics.

The reference is detectron2's ``projects/ViTDet`` (``modeling/backbone/vit.py`` and ``utils.py``;
mmdet's ``projects/ViTDet`` ports it). Its forward pass, as read from the public sources and
re-derived here in plain torch (this file's own code), with its own parameter names
(``backbone.net.*``, ``backbone.simfp_<stage>.*``):

- patch embedding: a stride-p convolution, which drops the remainder of sides that are not a
  multiple of p;
- absolute position: the table of the pretraining grid (1 + S x S rows, the first for the cls
  token), without its cls row, interpolated bicubically (``align_corners=False``) to the token
  grid whenever the grids differ, and added to the tokens;
- blocks: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))`` (LayerNorm eps 1e-6, GELU MLP); the
  windowed blocks zero-pad the normalised grid to a multiple of the window, cut it into windows,
  attend inside each window with every token (padding included) as a key, and drop the padding;
- attention: ``softmax(q k^T / sqrt(d) + q . R_h[y - y'] + q . R_w[x - x'])`` per head, with the
  decomposed tables linearly interpolated to ``2 * size - 1`` rows when their length differs;
- simple feature pyramid from the last map: scale 4 = ConvT 2x2, LayerNorm, GELU, ConvT 2x2;
  scale 2 = ConvT 2x2; scale 1 = identity; scale 1/2 = max-pool 2x2; each then conv 1x1 (no bias)
  + channel LayerNorm and conv 3x3 (no bias) + channel LayerNorm; p6 = max-pool (kernel 1,
  stride 2) of the coarsest level;
- test time: the image is zero-padded (after normalisation) to a ``square_pad`` square and the
  whole model runs on the padded canvas.

mae-mm's weights are mapped into the reference's names by this file's own key map.
"""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from mae_mm.models.backbones import ViTDetBackbone
from mae_mm.models.necks import SimpleFeaturePyramid

ARCH = dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)
PATCH, IMG, PRETRAIN, WINDOW, GLOBAL = 8, 80, 48, 3, (1, 3)
SCALES = (4.0, 2.0, 1.0, 0.5)
EPS = 1e-6


# ----------------------------------------------------------------- the reference, in plain torch
def _ref_rel_table(table: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """(q_size, k_size, C): the table row of each query/key offset, after resampling."""
    length = 2 * max(q_size, k_size) - 1
    if table.shape[0] != length:
        table = F.interpolate(table.t()[None], size=length, mode='linear',
                              align_corners=False)[0].t()
    q = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    return table[(q - k + (k_size - 1) * max(q_size / k_size, 1.0)).long()]


def _ref_attention(x, p, name, heads):
    """Global attention with decomposed relative position on (B, H, W, C)."""
    b, h, w, c = x.shape
    d = c // heads
    qkv = F.linear(x.reshape(b, h * w, c), p[f'{name}.qkv.weight'], p[f'{name}.qkv.bias'])
    q, k, v = qkv.reshape(b, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    logits = (q * d**-0.5) @ k.transpose(-2, -1)  # (B, heads, HW, HW)
    r_h = _ref_rel_table(p[f'{name}.rel_pos_h'], h, h)
    r_w = _ref_rel_table(p[f'{name}.rel_pos_w'], w, w)
    grid_q = q.reshape(b, heads, h, w, d)
    bias_h = torch.einsum('bnhwc,hkc->bnhwk', grid_q, r_h)
    bias_w = torch.einsum('bnhwc,wkc->bnhwk', grid_q, r_w)
    logits = (logits.reshape(b, heads, h, w, h, w) + bias_h[..., :, None]
              + bias_w[..., None, :]).reshape(b, heads, h * w, h * w)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, h, w, c)
    return F.linear(out, p[f'{name}.proj.weight'], p[f'{name}.proj.bias'])


def _ref_block(x, p, name, heads, window):
    c = x.shape[-1]
    y = F.layer_norm(x, (c, ), p[f'{name}.norm1.weight'], p[f'{name}.norm1.bias'], EPS)
    if window:
        b, h, w, _ = y.shape
        hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
        y = F.pad(y, (0, 0, 0, wp - w, 0, hp - h))  # zero tokens, keys like the others
        y = y.reshape(b, hp // window, window, wp // window, window, c).transpose(2, 3)
        y = _ref_attention(y.reshape(-1, window, window, c), p, f'{name}.attn', heads)
        y = y.reshape(b, hp // window, wp // window, window, window, c).transpose(2, 3)
        y = y.reshape(b, hp, wp, c)[:, :h, :w]
    else:
        y = _ref_attention(y, p, f'{name}.attn', heads)
    x = x + y
    y = F.layer_norm(x, (c, ), p[f'{name}.norm2.weight'], p[f'{name}.norm2.bias'], EPS)
    y = F.linear(F.gelu(F.linear(y, p[f'{name}.mlp.fc1.weight'], p[f'{name}.mlp.fc1.bias'])),
                 p[f'{name}.mlp.fc2.weight'], p[f'{name}.mlp.fc2.bias'])
    return x + y


def _ref_vit(x, p, heads=2, window=WINDOW, global_blocks=GLOBAL, depth=4):
    tokens = F.conv2d(x, p['backbone.net.patch_embed.proj.weight'],
                      p['backbone.net.patch_embed.proj.bias'], stride=PATCH)
    h, w = tokens.shape[-2:]
    table = p['backbone.net.pos_embed'][:, 1:]
    side = int(math.isqrt(table.shape[1]))
    table = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if (side, side) != (h, w):
        table = F.interpolate(table, size=(h, w), mode='bicubic', align_corners=False)
    tokens = (tokens + table).permute(0, 2, 3, 1)
    for i in range(depth):
        tokens = _ref_block(tokens, p, f'backbone.net.blocks.{i}', heads,
                            0 if i in global_blocks else window)
    return tokens.permute(0, 3, 1, 2)


def _ref_ln2d(x, p, name):
    return F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1], ), p[f'{name}.weight'],
                        p[f'{name}.bias'], EPS).permute(0, 3, 1, 2)


def _ref_pyramid(feature, p):
    outs = []
    for scale, stage in zip(SCALES, (2, 3, 4, 5)):
        pre, y = f'backbone.simfp_{stage}', feature
        if scale == 4.0:
            y = F.conv_transpose2d(y, p[f'{pre}.0.weight'], p[f'{pre}.0.bias'], stride=2)
            y = F.gelu(_ref_ln2d(y, p, f'{pre}.1'))
            y = F.conv_transpose2d(y, p[f'{pre}.3.weight'], p[f'{pre}.3.bias'], stride=2)
            first = 4
        elif scale == 2.0:
            y = F.conv_transpose2d(y, p[f'{pre}.0.weight'], p[f'{pre}.0.bias'], stride=2)
            first = 1
        elif scale == 1.0:
            first = 0
        else:
            y = F.max_pool2d(y, kernel_size=2, stride=2)
            first = 1
        y = _ref_ln2d(F.conv2d(y, p[f'{pre}.{first}.weight']), p, f'{pre}.{first}.norm')
        y = F.conv2d(y, p[f'{pre}.{first + 1}.weight'], padding=1)
        outs.append(_ref_ln2d(y, p, f'{pre}.{first + 1}.norm'))
    outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
    return outs


def _ref_model(x, p, square_pad=0):
    """Backbone + pyramid; ``square_pad``: the image zero-padded to that square first."""
    if square_pad:
        x = F.pad(x, (0, square_pad - x.shape[-1], 0, square_pad - x.shape[-2]))
    return _ref_pyramid(_ref_vit(x, p), p)


# ------------------------------------------------------- mae-mm's weights in the reference's names
_NECK_MAP = {  # mae-mm stage index, Sequential index -> detectron2 name (scale 4, 2, 1, 1/2)
    0: {0: 'simfp_2.0', 1: 'simfp_2.1', 3: 'simfp_2.3', 4: 'simfp_2.4', 5: 'simfp_2.4.norm',
        6: 'simfp_2.5', 7: 'simfp_2.5.norm'},
    1: {0: 'simfp_3.0', 1: 'simfp_3.1', 2: 'simfp_3.1.norm', 3: 'simfp_3.2',
        4: 'simfp_3.2.norm'},
    2: {0: 'simfp_4.0', 1: 'simfp_4.0.norm', 2: 'simfp_4.1', 3: 'simfp_4.1.norm'},
    3: {1: 'simfp_5.1', 2: 'simfp_5.1.norm', 3: 'simfp_5.2', 4: 'simfp_5.2.norm'},
}


def reference_weights(backbone, neck):
    """The tensors themselves (not copies: gradients flow to mae-mm's parameters), renamed."""
    out = {}
    for key, value in backbone.named_parameters():
        if key.startswith(('cls_token', 'norm.')):
            continue  # the reference backbone has neither
        out[f'backbone.net.{key}'] = value
    for key, value in neck.named_parameters():
        stage, index, leaf = re.fullmatch(r'stages\.(\d)\.(\d)\.(\w+)', key).groups()
        out[f'backbone.{_NECK_MAP[int(stage)][int(index)]}.{leaf}'] = value
    return out


# ---------------------------------------------------------------------------- the models compared
def _models(**options):
    torch.manual_seed(0)
    settings = dict(arch=ARCH, img_size=IMG, patch_size=PATCH, window_size=WINDOW,
                    global_attn_indexes=GLOBAL, pretrain_img_size=PRETRAIN, drop_path_rate=0.0)
    backbone = ViTDetBackbone(**dict(settings, **options)).eval()
    neck = SimpleFeaturePyramid(ARCH['embed_dims'], 16, SCALES, num_outs=5).eval()
    _perturb(backbone, neck)
    return backbone, neck


def _perturb(*modules):
    """Every parameter non-trivial: LayerNorms away from (1, 0), relative tables non-zero."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in modules:
            for name, param in module.named_parameters():
                noise = torch.randn(param.shape, generator=gen)
                if param.ndim == 1 and name.endswith('weight'):  # LayerNorms
                    param.copy_(1 + 0.2 * noise)
                elif 'rel_pos' in name:
                    param.copy_(0.5 * noise)
                elif name == 'pos_embed':
                    param.copy_(0.5 * noise)
                else:
                    param.copy_(noise * (0.3 if param.ndim == 1 else
                                         param[0].numel()**-0.5))


def _mae_mm(backbone, neck, x):
    return neck(backbone(x))


def _max_rel(outs, refs):
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(outs, refs))


SIZES = [(64, 64), (48, 80), (60, 44)]  # square; rectangular; grid 7 x 5, not a window multiple


@pytest.mark.parametrize('size', SIZES)
def test_backbone_and_pyramid_equal_the_reference(size):
    backbone, neck = _models()
    assert backbone.pos_embed.shape == (1, 1 + (PRETRAIN // PATCH)**2, 32)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        outs = _mae_mm(backbone, neck, x)
        refs = _ref_model(x, reference_weights(backbone, neck))
    assert [o.shape for o in outs] == [r.shape for r in refs]
    assert refs[2].shape[-2:] == (size[0] // PATCH, size[1] // PATCH)  # remainder dropped
    assert _max_rel(outs, refs) < 1e-5


@pytest.mark.parametrize('size', SIZES)
def test_test_time_square_padding_equals_the_reference(size):
    """The reference pads to a square (``square_pad``) and runs everything on the canvas: the
    same whether the data preprocessor pads or ``pad_to_img_size`` pads inside the backbone."""
    backbone, neck = _models()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        refs = _ref_model(x, reference_weights(backbone, neck), square_pad=IMG)
        padded_outside = _mae_mm(backbone, neck, F.pad(x, (0, IMG - size[1], 0, IMG - size[0])))
        backbone.pad_to_img_size = True
        padded_inside = _mae_mm(backbone, neck, x)
    assert refs[2].shape[-2:] == (IMG // PATCH, IMG // PATCH)
    assert _max_rel(padded_outside, refs) < 1e-5
    assert _max_rel(padded_inside, refs) < 1e-5


def _sgd_step(backbone, neck, x, target, lr=0.5):
    """One SGD step of mae-mm's model and, from the same weights, of the reference; the
    outputs of both after it."""
    ref = {k: v.detach().clone().requires_grad_(True)
           for k, v in reference_weights(backbone, neck).items()}
    optimizer = torch.optim.SGD([p for p in [*backbone.parameters(), *neck.parameters()]
                                 if p.requires_grad], lr=lr)
    loss = sum((o * t).sum() for o, t in zip(_mae_mm(backbone, neck, x), target))
    loss.backward()
    optimizer.step()
    ref_loss = sum((o * t).sum() for o, t in zip(_ref_model(x, ref), target))
    grads = torch.autograd.grad(ref_loss, list(ref.values()))
    with torch.no_grad():
        ref = {k: v - lr * g for (k, v), g in zip(ref.items(), grads)}
        return _mae_mm(backbone, neck, x), _ref_model(x, ref)


def test_one_sgd_step_moves_the_outputs_as_the_reference_parameterisation():
    backbone, neck = _models()
    x = torch.randn(2, 3, 64, 80)
    target = [torch.randn_like(o) for o in _mae_mm(backbone, neck, x)]
    before = _mae_mm(backbone, neck, x)[2].detach()
    outs, refs = _sgd_step(backbone, neck, x, target)
    assert backbone.pos_embed.grad.shape == (1, 1 + 36, 32)  # the pretraining table is trained
    assert (outs[2] - before).abs().max() > 1e-2 * before.abs().max()  # the step does something
    assert _max_rel(outs, refs) < 1e-5


# --------------------------------------------------------------------- the non-default options
def test_mask_padded_keys_changes_the_outputs_only_where_windows_are_padded():
    backbone, neck = _models()
    masked, _ = _models(mask_padded_keys=True)
    x = torch.randn(1, 3, 64, 64)  # an 8 x 8 grid in 3 x 3 windows: padded to 9 x 9
    tiled = torch.randn(1, 3, 72, 48)  # 9 x 6: the windows tile it, nothing padded
    with torch.no_grad():
        assert _max_rel(masked(x), backbone(x)) > 1e-3
        torch.testing.assert_close(masked(tiled), backbone(tiled))


def test_mask_padded_keys_gives_attention_restricted_to_the_image_tokens():
    """With the option, an edge window equals the reference's attention on its image tokens
    alone (a window cut to the grid)."""
    backbone, _ = _models(mask_padded_keys=True)
    p = reference_weights(backbone, _models()[1])
    block = backbone.blocks[0]  # windowed
    x = torch.randn(1, 8, 8, 32)
    with torch.no_grad():
        out = block.attn(block.norm1(x))
        y = F.layer_norm(x, (32, ), p['backbone.net.blocks.0.norm1.weight'],
                         p['backbone.net.blocks.0.norm1.bias'], EPS)
        expected = torch.empty_like(x)
        for top in range(0, 8, WINDOW):
            for left in range(0, 8, WINDOW):
                tile = y[:, top:top + WINDOW, left:left + WINDOW]
                # A cut window keeps the window's relative table (its offsets are a subset).
                expected[:, top:top + WINDOW, left:left + WINDOW] = _ref_cut_window(
                    tile, p, 'backbone.net.blocks.0.attn')
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _ref_cut_window(tile, p, name):
    b, h, w, c = tile.shape
    full = F.pad(tile, (0, 0, 0, WINDOW - w, 0, WINDOW - h))
    keep = torch.zeros(WINDOW, WINDOW, dtype=torch.bool)
    keep[:h, :w] = True
    d = c // 2
    qkv = F.linear(full.reshape(b, -1, c), p[f'{name}.qkv.weight'], p[f'{name}.qkv.bias'])
    q, k, v = qkv.reshape(b, -1, 3, 2, d).permute(2, 0, 3, 1, 4)
    r_h = _ref_rel_table(p[f'{name}.rel_pos_h'], WINDOW, WINDOW)
    r_w = _ref_rel_table(p[f'{name}.rel_pos_w'], WINDOW, WINDOW)
    grid_q = q.reshape(b, 2, WINDOW, WINDOW, d)
    logits = ((q * d**-0.5) @ k.transpose(-2, -1)).reshape(b, 2, WINDOW, WINDOW, WINDOW, WINDOW)
    logits = logits + torch.einsum('bnhwc,hkc->bnhwk', grid_q, r_h)[..., :, None] \
        + torch.einsum('bnhwc,wkc->bnhwk', grid_q, r_w)[..., None, :]
    logits = logits.reshape(b, 2, WINDOW**2, WINDOW**2)
    logits = logits.masked_fill(~keep.reshape(-1), float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, WINDOW, WINDOW, c)
    return F.linear(out, p[f'{name}.proj.weight'], p[f'{name}.proj.bias'])[:, :h, :w]


def _checkpoint_of(backbone):
    """The backbone's pretraining-format weights (pos_embed on the pretraining grid)."""
    return {'state_dict': {f'backbone.{k}': v.clone() for k, v in backbone.state_dict().items()
                           if 'rel_pos' not in k}}


def test_pos_embed_resample_at_load_trains_another_parameterisation():
    backbone, neck = _models()
    legacy, legacy_neck = _models(pos_embed_resample_at_load=True)
    legacy.load_pretrained(_checkpoint_of(backbone))
    legacy.load_state_dict({k: v for k, v in backbone.state_dict().items() if 'rel_pos' in k},
                           strict=False)
    legacy_neck.load_state_dict(neck.state_dict())
    assert legacy.pos_embed.shape == (1, 1 + (IMG // PATCH)**2, 32)  # resampled at load
    at_img_size = torch.randn(2, 3, IMG, IMG)
    other = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        # At img_size the resampled table is the one the reference interpolates to ...
        assert _max_rel(_mae_mm(legacy, legacy_neck, at_img_size),
                        _mae_mm(backbone, neck, at_img_size)) < 1e-5
        # ... at another grid it is resampled twice.
        assert _max_rel(_mae_mm(legacy, legacy_neck, other), _mae_mm(backbone, neck, other)) \
            > 1e-4
    # After one identical SGD step the two parameterisations part.
    target = [torch.randn_like(o) for o in _mae_mm(backbone, neck, at_img_size)]
    outs, refs = _sgd_step(backbone, neck, at_img_size, target)
    legacy_outs, _ = _sgd_step(legacy, legacy_neck, at_img_size, target)
    assert _max_rel(outs, refs) < 1e-5
    assert _max_rel(legacy_outs, refs) > 1e-4


def test_pad_patch_remainder_zero_pads_the_last_patch():
    backbone, neck = _models()
    padding, _ = _models(pad_patch_remainder=True)
    x = torch.randn(1, 3, 60, 44)  # 7.5 x 5.5 patches
    with torch.no_grad():
        out = padding(x)[0]
        assert out.shape[-2:] == (8, 6) and backbone(x)[0].shape[-2:] == (7, 5)
        torch.testing.assert_close(out, backbone(F.pad(x, (0, 4, 0, 4)))[0])


def test_crop_to_input_changes_the_pyramid_inside_the_image():
    backbone, neck = _models(pad_to_img_size=True)
    cropping, _ = _models(pad_to_img_size=True, crop_to_input=True)
    x = torch.randn(1, 3, 48, 64)  # padded to 80 x 80: a 10 x 10 grid, cropped to 6 x 8
    with torch.no_grad():
        full, cropped = backbone(x)[0], cropping(x)[0]
        assert full.shape[-2:] == (10, 10) and cropped.shape[-2:] == (6, 8)
        torch.testing.assert_close(cropped, full[..., :6, :8])  # the same backbone features
        pyramid, cropped_pyramid = neck(full), neck(cropped)
    # The 3 x 3 convolutions and pools at the image's border see zeros instead of the canvas.
    inside = [p[..., :c.shape[-2], :c.shape[-1]] for p, c in zip(pyramid, cropped_pyramid)]
    assert _max_rel(cropped_pyramid, inside) > 1e-3


@pytest.mark.parametrize('kwargs,field', [
    (dict(pretrain_img_size=50), 'pretrain_img_size'),
    (dict(crop_to_input=True), 'pad_to_img_size'),
])
def test_bad_options_raise_one_line_errors(kwargs, field):
    with pytest.raises(ValueError, match=field) as error:
        _models(**kwargs)
    assert '\n' not in str(error.value)


def test_input_smaller_than_a_patch_names_the_option():
    backbone, _ = _models()
    with pytest.raises(ValueError, match='pad_patch_remainder') as error:
        backbone(torch.randn(1, 3, 4, 64))
    assert '\n' not in str(error.value)


# ------------------------------------------------------------------------- pretraining checkpoints
def test_official_mae_checkpoint_keeps_its_14x14_table():
    from mae_mm.models.backbones import MaskedViT
    pretrained = MaskedViT(arch=ARCH, img_size=224, patch_size=16)
    with torch.no_grad():
        pretrained.pos_embed.normal_()
    official = {'model': {k: v for k, v in pretrained.state_dict().items()}}
    backbone = ViTDetBackbone(arch=ARCH, img_size=1024, patch_size=16, window_size=14)
    report = backbone.load_pretrained(official)
    assert backbone.pos_embed.shape == (1, 197, 32)
    assert torch.equal(backbone.pos_embed, pretrained.pos_embed)
    assert 'resampled' not in report and 'rel_pos' in report


def test_checkpoint_with_another_table_is_resampled_once_to_pretrain_img_size():
    from mae_mm.models.backbones import MaskedViT
    pretrained = MaskedViT(arch=ARCH, img_size=64, patch_size=16)  # a 4 x 4 table
    backbone = ViTDetBackbone(arch=ARCH, img_size=128, patch_size=16, window_size=4)
    report = backbone.load_pretrained({'state_dict': {
        f'backbone.{k}': v for k, v in pretrained.state_dict().items()}})
    assert backbone.pos_embed.shape == (1, 197, 32)
    assert 'model.backbone.pretrain_img_size=224' in report
    matching = ViTDetBackbone(arch=ARCH, img_size=128, patch_size=16, window_size=4,
                              pretrain_img_size=64)
    report = matching.load_pretrained({'state_dict': {
        f'backbone.{k}': v for k, v in pretrained.state_dict().items()}})
    assert torch.equal(matching.pos_embed, pretrained.pos_embed) and 'resampled' not in report
