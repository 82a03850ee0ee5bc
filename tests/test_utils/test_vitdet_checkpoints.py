"""Checkpoints of the ViTDet reference detectors (mmdet's and detectron2's ``projects/ViTDet``)
load into mae-mm's ViTDetBackbone and SimpleFeaturePyramid.

The reference key names and shapes are written here by hand from the public sources:

- mmdet ``projects/ViTDet/vitdet/vit.py`` (``ViT``: ``patch_embed.proj`` Conv2d, ``pos_embed``
  (1, 1 + (pretrain_img_size / patch)^2, D), ``blocks.N.{norm1, attn.qkv, attn.proj,
  attn.rel_pos_h, attn.rel_pos_w, norm2, mlp.fc1, mlp.fc2}``, rel-pos tables (2 * side - 1,
  head_dim) with side the window in windowed blocks and img_size / patch in global ones; no cls
  token, no final norm) and ``simple_fpn.py`` (``SimpleFPN``: ``fpn1`` = ConvTranspose2d, LN2d,
  GELU, ConvTranspose2d; ``fpn2`` = ConvTranspose2d; ``fpn3`` identity; ``fpn4`` max-pool;
  ``lateral_convs.i`` / ``fpn_convs.i`` mmcv ConvModules 1x1 / 3x3 with ``norm_cfg=LN2d``: no
  conv bias, and the norm named ``norm_layer`` by mmcv's ``infer_abbr`` for that plain-Module
  class);
- detectron2 ``detectron2/modeling/backbone/vit.py`` (the same ``ViT`` names under
  ``backbone.net.``; ``SimpleFeaturePyramid`` registers each level as ``simfp_{log2 stride}``:
  scale 4 = [ConvTranspose2d, LayerNorm, GELU, ConvTranspose2d], scale 2 = [ConvTranspose2d],
  scale 1 = [], scale 0.5 = [MaxPool2d], then two ``Conv2d`` (1x1, 3x3) holding their LayerNorm
  as ``.norm``, no bias with LN) and its checkpointer (model-zoo ``.pkl`` =
  ``{'model': {name: numpy array}, '__author__': ...}``; ``.pth`` = ``{'model': sd, ...}``).
"""
import pickle
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mae_mm.models.backbones.vitdet_backbone import ViTDetBackbone
from mae_mm.models.necks.simple_feature_pyramid import LayerNorm2d, SimpleFeaturePyramid
from mae_mm.utils.checkpoint import (PretrainedKeyMismatchError, convert_state_dict,
                                     detect_format, read_checkpoint)

# A tiny ViTDet: 4 blocks of width 64 (2 heads of 32), 16 px patches on 64 px (a 4 x 4 grid),
# 2 x 2 windows, blocks 1 and 3 global; a 32-channel pyramid at scales 4, 2, 1, 0.5.
DIM, DEPTH, HEADS, MLP, PATCH, IMG, WINDOW, GLOBAL, OUT = 64, 4, 2, 128, 16, 64, 2, (1, 3), 32
SCALES = (4.0, 2.0, 1.0, 0.5)


def tiny_backbone(dim=DIM, init_cfg=None):
    return ViTDetBackbone(
        arch=dict(embed_dims=dim, num_layers=DEPTH, num_heads=HEADS, feedforward_channels=MLP),
        img_size=IMG, patch_size=PATCH, drop_path_rate=0.0, window_size=WINDOW,
        global_attn_indexes=GLOBAL, init_cfg=init_cfg)


def reference_vit_shapes(dim, depth, heads, mlp, patch, img, window, global_blocks,
                         pos_positions):
    """The reference ``ViT``'s parameters (mmdet and detectron2 alike), bare names."""
    head_dim, grid = dim // heads, img // patch
    shapes = OrderedDict([('pos_embed', (1, pos_positions, dim)),
                          ('patch_embed.proj.weight', (dim, 3, patch, patch)),
                          ('patch_embed.proj.bias', (dim, ))])
    for i in range(depth):
        side = grid if i in global_blocks else window
        shapes.update([
            (f'blocks.{i}.norm1.weight', (dim, )), (f'blocks.{i}.norm1.bias', (dim, )),
            (f'blocks.{i}.attn.qkv.weight', (3 * dim, dim)),
            (f'blocks.{i}.attn.qkv.bias', (3 * dim, )),
            (f'blocks.{i}.attn.proj.weight', (dim, dim)), (f'blocks.{i}.attn.proj.bias', (dim, )),
            (f'blocks.{i}.attn.rel_pos_h', (2 * side - 1, head_dim)),
            (f'blocks.{i}.attn.rel_pos_w', (2 * side - 1, head_dim)),
            (f'blocks.{i}.norm2.weight', (dim, )), (f'blocks.{i}.norm2.bias', (dim, )),
            (f'blocks.{i}.mlp.fc1.weight', (mlp, dim)), (f'blocks.{i}.mlp.fc1.bias', (mlp, )),
            (f'blocks.{i}.mlp.fc2.weight', (dim, mlp)), (f'blocks.{i}.mlp.fc2.bias', (dim, ))])
    return shapes


def mmdet_simple_fpn_shapes(dim, out):
    """mmdet ``SimpleFPN(backbone_channel=dim, in_channels=[dim/4, dim/2, dim, dim],
    out_channels=out, norm_cfg=dict(type='LN2d'))``, under ``neck.``."""
    shapes = OrderedDict([
        ('neck.fpn1.0.weight', (dim, dim // 2, 2, 2)), ('neck.fpn1.0.bias', (dim // 2, )),
        ('neck.fpn1.1.weight', (dim // 2, )), ('neck.fpn1.1.bias', (dim // 2, )),
        ('neck.fpn1.3.weight', (dim // 2, dim // 4, 2, 2)), ('neck.fpn1.3.bias', (dim // 4, )),
        ('neck.fpn2.0.weight', (dim, dim // 2, 2, 2)), ('neck.fpn2.0.bias', (dim // 2, ))])
    for i, channels in enumerate((dim // 4, dim // 2, dim, dim)):
        shapes.update([
            (f'neck.lateral_convs.{i}.conv.weight', (out, channels, 1, 1)),
            (f'neck.lateral_convs.{i}.norm_layer.weight', (out, )),
            (f'neck.lateral_convs.{i}.norm_layer.bias', (out, )),
            (f'neck.fpn_convs.{i}.conv.weight', (out, out, 3, 3)),
            (f'neck.fpn_convs.{i}.norm_layer.weight', (out, )),
            (f'neck.fpn_convs.{i}.norm_layer.bias', (out, ))])
    return shapes


def detectron2_simfp_shapes(dim, out):
    """detectron2 ``SimpleFeaturePyramid(scale_factors=(4, 2, 1, 0.5), norm='LN')`` on a
    stride-16 ViT: levels ``simfp_2`` ... ``simfp_5``, under ``backbone.``."""
    def convs(level, first, channels):
        return [(f'backbone.simfp_{level}.{first}.weight', (out, channels, 1, 1)),
                (f'backbone.simfp_{level}.{first}.norm.weight', (out, )),
                (f'backbone.simfp_{level}.{first}.norm.bias', (out, )),
                (f'backbone.simfp_{level}.{first + 1}.weight', (out, out, 3, 3)),
                (f'backbone.simfp_{level}.{first + 1}.norm.weight', (out, )),
                (f'backbone.simfp_{level}.{first + 1}.norm.bias', (out, ))]
    return OrderedDict(
        [('backbone.simfp_2.0.weight', (dim, dim // 2, 2, 2)),
         ('backbone.simfp_2.0.bias', (dim // 2, )),
         ('backbone.simfp_2.1.weight', (dim // 2, )), ('backbone.simfp_2.1.bias', (dim // 2, )),
         ('backbone.simfp_2.3.weight', (dim // 2, dim // 4, 2, 2)),
         ('backbone.simfp_2.3.bias', (dim // 4, ))] + convs(2, 4, dim // 4)
        + [('backbone.simfp_3.0.weight', (dim, dim // 2, 2, 2)),
           ('backbone.simfp_3.0.bias', (dim // 2, ))] + convs(3, 1, dim // 2)
        + convs(4, 0, dim) + convs(5, 1, dim))


#: A few detectron2 Mask R-CNN head keys (``StandardRPNHead`` with two convs,
#: ``FastRCNNConvFCHead`` with LN, ``FastRCNNOutputLayers``, ``MaskRCNNConvUpsampleHead``).
D2_HEADS = OrderedDict([
    ('proposal_generator.rpn_head.conv.conv0.weight', (OUT, OUT, 3, 3)),
    ('proposal_generator.rpn_head.objectness_logits.weight', (3, OUT, 1, 1)),
    ('proposal_generator.rpn_head.anchor_deltas.weight', (12, OUT, 1, 1)),
    ('roi_heads.box_head.conv1.weight', (OUT, OUT, 3, 3)),
    ('roi_heads.box_head.conv1.norm.weight', (OUT, )),
    ('roi_heads.box_predictor.cls_score.weight', (3, 16)),
    ('roi_heads.mask_head.mask_fcn1.weight', (OUT, OUT, 3, 3)),
    ('roi_heads.mask_head.predictor.weight', (2, OUT, 1, 1))])


def random_state(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(s, generator=gen)) for k, s in shapes.items())


def reference_backbone(model, prefix='backbone.', seed=0, **overrides):
    """A reference ViT state dict for ``model``'s architecture (the position table has the
    model's number of positions, so that the check does not depend on its resampling)."""
    kwargs = dict(dim=DIM, depth=DEPTH, heads=HEADS, mlp=MLP, patch=PATCH, img=IMG, window=WINDOW,
                  global_blocks=GLOBAL, pos_positions=model.pos_embed.shape[1])
    kwargs.update(overrides)
    shapes = reference_vit_shapes(**kwargs)
    return OrderedDict((prefix + k, v) for k, v in random_state(shapes, seed).items())


def mmdet_checkpoint(model):
    state = reference_backbone(model)
    state.update(random_state(mmdet_simple_fpn_shapes(DIM, OUT), seed=1))
    return {'meta': {'mmdet_version': '3.x'}, 'state_dict': state}


def detectron2_state(model):
    state = reference_backbone(model, prefix='backbone.net.')
    state.update(random_state(detectron2_simfp_shapes(DIM, OUT), seed=1))
    state.update(random_state(D2_HEADS, seed=2))
    return state


def check_backbone(model, reference, prefix):
    state = model.state_dict()
    for key, value in reference.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            assert torch.equal(state[name], value), name
    # The attention weights land in the blocks: windowed (0) and global (1) ones.
    assert torch.equal(model.blocks[0].attn.qkv.weight,
                       reference[prefix + 'blocks.0.attn.qkv.weight'])
    assert torch.equal(model.blocks[1].attn.rel_pos_h,
                       reference[prefix + 'blocks.1.attn.rel_pos_h'])
    assert model.blocks[1].attn.rel_pos_h.shape == (2 * IMG // PATCH - 1, DIM // HEADS)


def test_detection_by_key_signature():
    model = tiny_backbone()
    assert detect_format(mmdet_checkpoint(model)) == 'mmdet_vitdet'
    assert detect_format({'model': detectron2_state(model)}) == 'detectron2_vitdet'
    # a ViTDet backbone alone (mmdet's ViT state dict): relative positions and no cls token
    assert detect_format(reference_backbone(model, prefix='')) == 'mmdet_vitdet'
    # mae-mm's own ViTDet checkpoints stay mae_mm
    own = {'backbone.' + k: v for k, v in model.state_dict().items()}
    assert detect_format({'state_dict': own}) == 'mae_mm'


def test_mmdet_checkpoint_through_init_cfg(tmp_path):
    model = tiny_backbone()
    ckpt = mmdet_checkpoint(model)
    path = tmp_path / 'vitdet_mmdet.pth'
    torch.save(ckpt, path)
    model = tiny_backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                        prefix='backbone.'))
    model.init_weights()
    check_backbone(model, ckpt['state_dict'], 'backbone.')


@pytest.mark.parametrize('suffix', ['.pkl', '.pth'])
def test_detectron2_model_file_through_init_cfg(tmp_path, suffix):
    model = tiny_backbone()
    state = detectron2_state(model)
    path = tmp_path / f'model_final{suffix}'
    if suffix == '.pkl':  # the model zoo's: numpy arrays, plain pickle
        with open(path, 'wb') as f:
            pickle.dump({'model': {k: v.numpy() for k, v in state.items()},
                         '__author__': 'Detectron2 Model Zoo'}, f)
    else:  # a detectron2 training checkpoint
        torch.save({'model': state, 'iteration': 7}, path)
    model = tiny_backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                        prefix='backbone.'))
    model.init_weights()
    check_backbone(model, state, 'backbone.net.')


def test_detectron2_pickle_of_other_types_is_refused(tmp_path):
    from mae_mm.utils.compat import UnsafeCheckpointError
    path = tmp_path / 'bad.pkl'
    with open(path, 'wb') as f:
        pickle.dump({'model': {'backbone.net.pos_embed': torch.zeros(1)}}, f)  # a torch object
    with pytest.raises(UnsafeCheckpointError, match='MAE_MM_TRUSTED_CHECKPOINTS') as err:
        read_checkpoint(path)
    assert '\n' not in str(err.value)


def test_wrong_architecture_is_one_line(tmp_path):
    model = tiny_backbone()
    ckpt = {'meta': {}, 'state_dict': reference_backbone(model, dim=2 * DIM)}
    path = tmp_path / 'vitdet_wide.pth'
    torch.save(ckpt, path)
    model = tiny_backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                        prefix='backbone.'))
    with pytest.raises(PretrainedKeyMismatchError) as err:
        model.init_weights()
    message = str(err.value)
    assert '\n' not in message
    assert 'model.backbone.init_cfg' in message and 'allow_partial' in message
    assert 'patch_embed.proj.weight' in message


def pyramid_reference(x, tensors, sampling, convs):
    """The reference level, computed from the reference tensors: sampling layers, then conv
    1x1 + channel LayerNorm, conv 3x3 + channel LayerNorm (eps 1e-6)."""
    def ln2d(y, w, b):
        return F.layer_norm(y.permute(0, 2, 3, 1), y.shape[1:2], w, b, 1e-6).permute(0, 3, 1, 2)
    for kind, *names in sampling:
        if kind == 'up':
            x = F.conv_transpose2d(x, tensors[names[0]], tensors[names[1]], stride=2)
        elif kind == 'ln':
            x = F.gelu(ln2d(x, tensors[names[0]], tensors[names[1]]))
        else:
            x = F.max_pool2d(x, 2, 2)
    x = ln2d(F.conv2d(x, tensors[convs[0]]), tensors[convs[1]], tensors[convs[2]])
    return ln2d(F.conv2d(x, tensors[convs[3]], padding=1), tensors[convs[4]], tensors[convs[5]])


@pytest.mark.parametrize('fmt', ['mmdet', 'detectron2'])
def test_pyramid_values_and_outputs(fmt):
    model = tiny_backbone()
    if fmt == 'mmdet':
        ckpt = mmdet_checkpoint(model)
        ref = ckpt['state_dict']

        def level(i):
            return [f'neck.{kind}.{i}.{part}.{p}' for kind in ('lateral_convs', 'fpn_convs')
                    for part, p in (('conv', 'weight'), ('norm_layer', 'weight'),
                                    ('norm_layer', 'bias'))]
        sampling = [[('up', 'neck.fpn1.0.weight', 'neck.fpn1.0.bias'),
                     ('ln', 'neck.fpn1.1.weight', 'neck.fpn1.1.bias'),
                     ('up', 'neck.fpn1.3.weight', 'neck.fpn1.3.bias')],
                    [('up', 'neck.fpn2.0.weight', 'neck.fpn2.0.bias')], [], [('pool', )]]
        convs = [level(i) for i in range(4)]
    else:
        ref = detectron2_state(model)
        ckpt = {'model': ref}

        def level(k, j):
            return [f'backbone.simfp_{k}.{j + d}.{p}' for d in (0, 1)
                    for p in ('weight', 'norm.weight', 'norm.bias')]
        sampling = [[('up', 'backbone.simfp_2.0.weight', 'backbone.simfp_2.0.bias'),
                     ('ln', 'backbone.simfp_2.1.weight', 'backbone.simfp_2.1.bias'),
                     ('up', 'backbone.simfp_2.3.weight', 'backbone.simfp_2.3.bias')],
                    [('up', 'backbone.simfp_3.0.weight', 'backbone.simfp_3.0.bias')], [],
                    [('pool', )]]
        convs = [level(2, 4), level(3, 1), level(4, 0), level(5, 1)]
    result = convert_state_dict(ckpt, 'mae_mm')
    neck = SimpleFeaturePyramid(DIM, OUT, SCALES, num_outs=5)
    neck_state = {k[len('neck.'):]: v for k, v in result.state_dict.items()
                  if k.startswith('neck.')}
    neck.load_state_dict(neck_state, strict=True)  # every pyramid parameter, no other
    # The LayerNorm2d of level 0 between the transposed convolutions, and the last one
    norms = [m for m in neck.stages[0] if isinstance(m, LayerNorm2d)]
    assert torch.equal(norms[0].weight, ref[sampling[0][1][1]])
    assert torch.equal(norms[-1].bias, ref[convs[0][5]])
    conv1x1 = [m for m in neck.stages[3] if type(m) is nn.Conv2d][0]
    assert torch.equal(conv1x1.weight, ref[convs[3][0]])
    x = torch.randn(2, DIM, 4, 6)
    outs = neck(x)
    for i in range(4):
        torch.testing.assert_close(outs[i], pyramid_reference(x, ref, sampling[i], convs[i]))
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])  # the top block


def test_conversion_report_lists_what_is_left_out():
    model = tiny_backbone()
    result = convert_state_dict({'model': detectron2_state(model)}, 'mae_mm')
    assert result.source_format == 'detectron2_vitdet'
    dropped = {k for k, _ in result.dropped}
    assert dropped == set(D2_HEADS)
    report = result.report()
    assert 'left out (8 keys)' in report and 'roi_heads.' in report
    assert 'all keys of a complete ViTDet backbone are present' in report
    assert not any(k.startswith(('backbone.net.', 'backbone.simfp_'))
                   for k in result.state_dict)
    with pytest.raises(ValueError, match='converts to mae_mm names only'):
        convert_state_dict({'model': detectron2_state(model)}, 'official')
