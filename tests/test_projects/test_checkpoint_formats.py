"""An official-format MAE checkpoint and the mae-mm checkpoint converted from it give the
downstream backbones of both projects the same tensors (and those of the pretraining run)."""
import importlib.util
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as MMSEG_MODELS

from mae_mm.models.backbones.vit_arch import resolve_arch

from ..conftest import REPO_ROOT
from ..test_utils._foreign_layouts import (official_checkpoint, official_encoder_names,
                                           official_shapes)
from .conftest import (PATCH, PRETRAIN_IMG, UPERNET_TOY, VITDET_TOY,
                       assert_backbone_is_checkpoint, load_state, toy_cfg, upernet_toy_options,
                       vitdet_toy_options)


def _official_to_mae_mm():
    path = osp.join(REPO_ROOT, 'tools', 'model_converters', 'mae_official_to_mae_mm.py')
    spec = importlib.util.spec_from_file_location('_mae_mm_official_to_mae_mm', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope='module')
def official_and_converted(mae_checkpoint, tmp_path_factory):
    """The pretrained encoder written by hand in the layout of the official
    ``mae_pretrain_vit_*.pth`` ({'model': encoder keys}), and the file that
    tools/model_converters/mae_official_to_mae_mm.py makes of it."""
    root = tmp_path_factory.mktemp('formats')
    official = str(root / 'mae_pretrain_official.pth')
    # models_mae.py's encoder keys and shapes (ViT-T: 12 blocks of 192, 16 px patches, a 4 x 4
    # grid), filled from the pretraining run under the hand-written name map.
    arch = resolve_arch('t')
    layers = arch['num_layers']
    shapes = official_shapes(num_layers=layers, embed_dims=arch['embed_dims'],
                             mlp_dims=arch['feedforward_channels'], patch_size=PATCH,
                             num_patches=(PRETRAIN_IMG // PATCH)**2)
    checkpoint = official_checkpoint(load_state(mae_checkpoint), encoder_only=True,
                                     num_layers=layers, shapes=shapes)
    names = official_encoder_names(layers)
    assert list(checkpoint) == ['model'] and list(checkpoint['model']) == names
    torch.save(checkpoint, official)
    converted = str(root / 'mae_mm_converted.pth')
    assert _official_to_mae_mm()([official, converted, '--quiet']) == 0
    assert set(load_state(converted)) == {'backbone.' + k for k in names}
    return official, converted


def _backbone_after_init(cfg, registry, checkpoint: str) -> dict:
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.build(cfg.model)
    model.init_weights()
    return model.backbone.state_dict()


@pytest.mark.parametrize('project', ['vitdet', 'upernet'])
def test_official_and_converted_checkpoints_load_the_same_tensors(
        project, mae_checkpoint, official_and_converted, coco_set, voc_set, tmp_path):
    if project == 'vitdet':
        cfg = toy_cfg(VITDET_TOY, vitdet_toy_options(mae_checkpoint), tmp_path)
        registry = MMDET_MODELS
    else:
        cfg = toy_cfg(UPERNET_TOY, upernet_toy_options(mae_checkpoint), tmp_path)
        registry = MMSEG_MODELS
    official, converted = official_and_converted
    from_official = _backbone_after_init(cfg, registry, official)
    from_converted = _backbone_after_init(cfg, registry, converted)
    assert from_official.keys() == from_converted.keys()
    for key, value in from_official.items():
        assert torch.equal(value, from_converted[key]), key
    assert_backbone_is_checkpoint(from_official, mae_checkpoint)


def test_load_report_lists_relative_tables_as_expected_missing(mae_checkpoint,
                                                                official_and_converted,
                                                                coco_set, tmp_path):
    cfg = toy_cfg(VITDET_TOY, vitdet_toy_options(mae_checkpoint), tmp_path)
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MMDET_MODELS.build(cfg.model).backbone
    for checkpoint in (mae_checkpoint, *official_and_converted):
        report = backbone.load_pretrained(checkpoint)
        assert 'expected missing' in report and 'attn.{rel_pos_h,rel_pos_w}' in report
        assert 'UNEXPECTED' not in report and 'MISSING' not in report and 'SHAPE' not in report
