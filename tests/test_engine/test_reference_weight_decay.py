"""The optimizer built from each project config puts every parameter in the weight-decay group
of the project's reference, with the reference's lr scale per layer id: detectron2's ViTDet
recipe (and mmdet's port) for projects/vitdet, BEiT/mmseg's for projects/upernet. The
reference rules are in tests/reference_weight_decay.py, written from the references' source."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope, init_default_scope

from ..conftest import REPO_ROOT
from ..reference_weight_decay import (beit_mmseg_no_decay, detectron2_layer_id,
                                      detectron2_no_decay, mmdet_vitdet_no_decay, mmseg_layer_id)

VITDET = osp.join(REPO_ROOT, 'projects/vitdet/configs')
UPERNET = osp.join(REPO_ROOT, 'projects/upernet/configs')


def _small(cfg: Config, project: str) -> Config:
    """The recipe with a ViT-T at 128 px (12 blocks, as B) and narrow heads; no checkpoint."""
    cfg.model.backbone.arch = 't'
    cfg.model.backbone.img_size = (128, 128)
    cfg.model.backbone.init_cfg = None
    if project == 'vitdet':
        cfg.model.neck.in_channels = 192
    else:
        cfg.model.neck.embed_dim = 192
        cfg.model.decode_head.update(in_channels=[192] * 4, channels=32)
        cfg.model.auxiliary_head.update(in_channels=192, channels=16)
    return cfg


def _model_and_optimizer(config: str, project: str):
    cfg = _small(Config.fromfile(config), project)
    scope = cfg.default_scope
    init_default_scope(scope)
    if scope == 'mmseg':
        import mmseg.models  # noqa: F401  (mmseg's registry has no lazy import locations)
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    return cfg, model, wrapper.optimizer


def _groups_by_name(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for param in group['params']:
            assert names[id(param)] not in out, 'parameter in two groups'
            out[names[id(param)]] = group
    assert set(out) == {n for n, p in model.named_parameters() if p.requires_grad}
    return out


def _check(model, optimizer, cfg, no_decay, layer_id):
    base_lr = cfg.optim_wrapper.optimizer.lr
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    decay = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    num_layers = model.backbone.num_layers
    groups = _groups_by_name(model, optimizer)
    for name, group in groups.items():
        expected_wd = 0.0 if name in no_decay else base_wd
        assert group['weight_decay'] == expected_wd, name
        scale = decay**(num_layers + 1 - layer_id(name, num_layers))
        assert group['lr'] == pytest.approx(base_lr * scale, rel=1e-9), name
    return groups


@pytest.mark.parametrize('config', ['vitdet_mask-rcnn_vit-b_lsj-100e_coco.py',
                                    'vitdet_mask-rcnn_vit-t_labelme-128px_toy-cpu.py'])
def test_vitdet_configs_split_weight_decay_as_detectron2(config):
    cfg, model, optimizer = _model_and_optimizer(osp.join(VITDET, config), 'vitdet')
    expected = detectron2_no_decay(model)
    # detectron2 and mmdet's port agree on this model's trainable parameters (the unused final
    # norm, which neither reference has, is frozen).
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert expected & trainable == mmdet_vitdet_no_decay(model) & trainable
    groups = _check(model, optimizer, cfg, expected, detectron2_layer_id)
    # What differs from mae-mm's former split, spelled out.
    for name in ('backbone.blocks.0.attn.qkv.bias', 'backbone.blocks.0.attn.rel_pos_h',
                 'backbone.patch_embed.proj.bias', 'neck.stages.0.0.weight'):
        if name in groups:
            assert groups[name]['weight_decay'] > 0, name
    assert groups['backbone.blocks.0.norm1.weight']['weight_decay'] == 0.0
    assert groups['backbone.blocks.0.attn.rel_pos_h']['weight_decay'] > 0
    # The channel LayerNorms of the pyramid and of the RoI heads decay.
    head_norms = [f'{module_name}.{leaf}' for module_name, module in model.named_modules()
                  if isinstance(module, torch.nn.LayerNorm)
                  and module_name.startswith(('neck.', 'roi_head.'))
                  for leaf, _ in module.named_parameters(recurse=False)]
    assert any(n.startswith('neck.') for n in head_norms)
    assert any(n.startswith('roi_head.') for n in head_norms)
    assert all(groups[n]['weight_decay'] > 0 for n in head_norms)
    if 'backbone.pos_embed' in groups:
        assert groups['backbone.pos_embed']['weight_decay'] == 0.0


def test_vitdet_large_config_keeps_the_split():
    cfg = Config.fromfile(osp.join(VITDET, 'vitdet_mask-rcnn_vit-l_lsj-100e_coco.py'))
    assert cfg.optim_wrapper.paramwise_cfg.decay_rule == 'detectron2_vitdet'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.8


@pytest.mark.parametrize('config', ['upernet_vit-b_8xb2-160k_ade20k-512x512.py',
                                    'upernet_vit-t_labelme-128px_toy-cpu.py',
                                    'upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-'
                                    '512x512.py'])
def test_upernet_configs_split_weight_decay_as_beit_mmseg(config):
    cfg, model, optimizer = _model_and_optimizer(osp.join(UPERNET, config), 'upernet')
    groups = _check(model, optimizer, cfg, beit_mmseg_no_decay(model), mmseg_layer_id)
    if 'mae-paper' in config:  # BEiT's bias table, cls token and position table decay
        for name in ('backbone.blocks.0.attn.relative_position_bias_table',
                     'backbone.cls_token', 'backbone.pos_embed'):
            assert groups[name]['weight_decay'] > 0, name
        assert groups['backbone.pos_embed']['layer_id'] == 0
    else:
        assert groups['backbone.blocks.0.attn.rel_pos_h']['weight_decay'] > 0
    assert groups['backbone.blocks.0.attn.qkv.bias']['weight_decay'] == 0.0
    assert groups['decode_head.bottleneck.bn.weight']['weight_decay'] == 0.0


def test_unknown_decay_rule_fails_with_the_config_field():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match='paramwise_cfg.decay_rule'):
        build_optim_wrapper(model, dict(
            type='OptimWrapper', constructor='mae_mm.LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1),
            paramwise_cfg=dict(layer_decay_rate=0.7, num_layers=1, decay_rule='detectron2')))
