"""LayerDecayOptimWrapperConstructor: per-parameter lr and weight decay against the formula
``decay ** (num_layers + 1 - layer_id)``, recomputed here from the parameter names, for an
mmpretrain classifier, an mmdet detector and an mmseg segmentor around a mae-mm ViT."""
import re

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.optim.scheduler import CosineAnnealingLR
from mmengine.registry import init_default_scope

from mae_mm.engine.optimizers import vit_layer_id
from mae_mm.registry import MODELS
from ..conftest import TINY_ARCH

NUM_LAYERS = TINY_ARCH['num_layers']
DIMS = TINY_ARCH['embed_dims']
BASE_LR, BASE_WD, DECAY = 1e-3, 0.05, 0.6


def _tiny_backbone(**kwargs):
    return dict(type='mae_mm.MaskedViT', arch=dict(TINY_ARCH), img_size=32, patch_size=8,
                mask_ratio=0.0, **kwargs)


def _expected_layer(name: str) -> int:
    """The layer id by the rule of the MAE paper's code, written out independently."""
    if name in ('backbone.cls_token', 'backbone.pos_embed') \
            or name.startswith('backbone.patch_embed.'):
        return 0
    block = re.match(r'backbone\.blocks\.(\d+)\.', name)
    if block:
        return int(block.group(1)) + 1
    return NUM_LAYERS + 1  # final norm, fc_norm, neck, heads


def _expected_no_decay(name: str, param) -> bool:
    return param.ndim == 1 or name.endswith(('cls_token', 'pos_embed'))


def _optim_wrapper(model, optimizer=None, **paramwise):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='mae_mm.LayerDecayOptimWrapperConstructor',
        optimizer=optimizer or dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
        paramwise_cfg={'layer_decay_rate': DECAY, **paramwise}))


def _check_groups(model, wrapper):
    """Every trainable parameter is in exactly one group, with the formula's lr and wd."""
    owner = {}
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            assert id(param) not in owner, 'parameter in two groups'
            owner[id(param)] = group
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert len(owner) == len(trainable)
    for name, param in trainable.items():
        group = owner[id(param)]
        layer = _expected_layer(name)
        assert group['lr'] == pytest.approx(BASE_LR * DECAY**(NUM_LAYERS + 1 - layer)), name
        expected_wd = 0.0 if _expected_no_decay(name, param) else BASE_WD
        assert group['weight_decay'] == expected_wd, name
    return trainable


def _classifier(**backbone):
    return MODELS.build(dict(
        type='mmpretrain.ImageClassifier',
        data_preprocessor=dict(type='mmpretrain.ClsDataPreprocessor', num_classes=3),
        backbone=_tiny_backbone(out_type='avg_featmap', final_norm=False,
                                pos_embed_trainable=True, **backbone),
        head=dict(type='mmpretrain.LinearClsHead', num_classes=3, in_channels=DIMS,
                  loss=dict(type='mmpretrain.CrossEntropyLoss'))))


def test_classifier_groups_follow_the_formula():
    model = _classifier()
    wrapper = _optim_wrapper(model)
    trainable = _check_groups(model, wrapper)
    # The extremes, spelled out: patch embedding at decay^(L+1), last block at decay^1, head 1.
    groups = {n: g for g in wrapper.optimizer.param_groups for n in g['param_names']}
    assert groups['backbone.patch_embed.proj.weight']['lr'] == pytest.approx(BASE_LR * DECAY**3)
    assert groups['backbone.blocks.1.mlp.fc2.weight']['lr'] == pytest.approx(BASE_LR * DECAY)
    assert groups['head.fc.weight']['lr'] == pytest.approx(BASE_LR)
    assert groups['backbone.fc_norm.weight']['lr'] == pytest.approx(BASE_LR)
    assert groups['backbone.pos_embed']['weight_decay'] == 0.0
    assert groups['backbone.blocks.0.attn.qkv.bias']['weight_decay'] == 0.0
    assert groups['backbone.blocks.0.attn.qkv.weight']['weight_decay'] == BASE_WD
    assert 'backbone.pos_embed' in trainable


def test_frozen_parameters_are_left_out():
    model = _classifier(frozen_stages=1)
    wrapper = _optim_wrapper(model)
    names = {n for g in wrapper.optimizer.param_groups for n in g['param_names']}
    assert not any(n.startswith(('backbone.blocks.0.', 'backbone.patch_embed')) for n in names)
    assert 'backbone.blocks.1.attn.qkv.weight' in names
    _check_groups(model, wrapper)


def test_custom_keys_and_optimizer_without_weight_decay():
    model = _classifier()
    wrapper = _optim_wrapper(model, custom_keys={'head': dict(lr_mult=10.0)})
    groups = {n: g for g in wrapper.optimizer.param_groups for n in g['param_names']}
    assert groups['head.fc.weight']['lr'] == pytest.approx(10 * BASE_LR)
    sgd = _optim_wrapper(model, optimizer=dict(type='SGD', lr=BASE_LR))
    lrs = {n: g['lr'] for g in sgd.optimizer.param_groups for n in g['param_names']}
    assert lrs['backbone.blocks.0.norm1.weight'] == pytest.approx(BASE_LR * DECAY**2)
    assert all(g['weight_decay'] == 0 for g in sgd.optimizer.param_groups)  # SGD default


def test_schedule_scales_min_lr_by_the_layer_factor():
    """With eta_min_ratio (as the fine-tuning configs use) every group ends at min_lr times its
    layer factor, as in the official code, which scales the whole schedule per group."""
    model = _classifier()
    wrapper = _optim_wrapper(model)
    min_lr = 1e-6
    scheduler = CosineAnnealingLR(wrapper, T_max=10, eta_min_ratio=min_lr / BASE_LR,
                                  by_epoch=False)
    for _ in range(10):
        wrapper.step()
        scheduler.step()
    for group in wrapper.optimizer.param_groups:
        scale = DECAY**(NUM_LAYERS + 1 - group['layer_id'])
        assert group['lr'] == pytest.approx(min_lr * scale, rel=1e-6)


def test_bad_settings_fail_with_the_config_field():
    model = _classifier()
    with pytest.raises(ValueError, match='layer_decay_rate'):
        _optim_wrapper(model, layer_decay_rate=1.5)
    with pytest.raises(ValueError, match='paramwise_cfg.num_layers'):
        _optim_wrapper(model, num_layers=1)


def test_layer_id_of_other_layouts():
    # mmpretrain names, a ViT nested under the backbone, and a bare backbone.
    assert vit_layer_id('backbone.layers.3.ffn.layers.0.0.weight', 12) == 4
    assert vit_layer_id('backbone.patch_embed.projection.weight', 12) == 0
    assert vit_layer_id('backbone.vit.blocks.5.attn.qkv.weight', 12) == 6
    assert vit_layer_id('backbone.vit.pos_embed', 12) == 0
    assert vit_layer_id('neck.decoder_blocks.0.mlp.fc1.weight', 12) == 13
    assert vit_layer_id('blocks.2.norm1.weight', 12, backbone_prefix=None) == 3
    assert vit_layer_id('norm.weight', 12, backbone_prefix=None) == 13


def test_mmdet_detector_with_mae_backbone():
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as MMDET_MODELS
    model = MMDET_MODELS.build(dict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=_tiny_backbone(out_type='featmap', out_indices=(0, 1), drop_path_rate=0.1),
        neck=dict(type='FPN', in_channels=[DIMS, DIMS], out_channels=16, num_outs=2),
        bbox_head=dict(
            type='RetinaHead', num_classes=2, in_channels=16, stacked_convs=1, feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=1, ratios=[1.0], strides=[8, 16]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))))
    # mmdet ViTDet configs name the rate decay_rate; both spellings work.
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', constructor='mae_mm.LayerDecayOptimWrapperConstructor',
        optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=BASE_WD),
        paramwise_cfg=dict(decay_rate=DECAY, num_layers=NUM_LAYERS)))
    trainable = _check_groups(model, wrapper)
    assert any(n.startswith('neck.') for n in trainable)
    assert any(n.startswith('bbox_head.') for n in trainable)


def test_mmseg_segmentor_with_mae_backbone_trains_a_step():
    init_default_scope('mmseg')
    import mmseg.models  # noqa: F401  (mmseg's registry has no lazy import locations)
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS as MMSEG_MODELS
    from mmseg.structures import SegDataSample
    model = MMSEG_MODELS.build(dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=_tiny_backbone(out_type='featmap', out_indices=(1, )),
        decode_head=dict(type='FCNHead', in_channels=DIMS, channels=16, num_convs=1,
                         num_classes=3, in_index=0, concat_input=False)))
    wrapper = _optim_wrapper(model)
    _check_groups(model, wrapper)
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 3, (1, 32, 32))),
                           metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32)))
    before = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    losses = model.loss(torch.randn(2, 3, 32, 32), [sample, sample])
    wrapper.update_params(sum(v for k, v in losses.items() if 'loss' in k))
    assert not torch.equal(before, model.backbone.blocks[0].attn.qkv.weight)
