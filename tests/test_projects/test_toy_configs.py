"""The projects' shipped CPU toy configs (``*_toy-cpu.py``): each trains as shipped on CPU with the
README command (here 2 iterations and a validation), under the recipe's mixed-precision wrapper,
which runs fp32 on CPU (bf16 autocast crashed mmcv's CPU nms in the RPN); named small archs
('t', 's') set the neck and head widths; the toy configs keep the recipes' structure."""
import os
import os.path as osp
import re

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS as MMSEG_MODELS

from .conftest import (MAE_TOY, MAE_TOY_CHECKPOINT, PATCH, PRETRAIN_IMG, TOOLS_TRAIN, UPERNET_B,
                       UPERNET_TOY, VITDET_B, VITDET_TOY)

FP32_NOTE = 'MixedPrecisionOptimWrapper: no GPU: training in fp32 on CPU'


def _log(work_dir) -> str:
    logs = [osp.join(root, name) for root, _, names in os.walk(work_dir) for name in names
            if name.endswith('.log')]
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        return f.read()


@pytest.mark.parametrize('project', ['vitdet', 'upernet'])
def test_toy_config_trains_on_cpu_as_shipped(project, mae_checkpoint, coco_set, voc_set,
                                             tmp_path, monkeypatch):
    """``python tools/train.py projects/<p>/configs/<toy>.py`` after the README's toy
    pretraining (whose checkpoint is where the config expects it), shortened to 2 iterations
    with the validation at the end; nothing else changed."""
    config = VITDET_TOY if project == 'vitdet' else UPERNET_TOY
    expected = tmp_path / MAE_TOY_CHECKPOINT
    expected.parent.mkdir(parents=True)
    os.symlink(mae_checkpoint, expected)
    monkeypatch.chdir(tmp_path)
    TOOLS_TRAIN.main([config, '--cfg-options', 'train_cfg.max_iters=2',
                      'train_cfg.val_interval=2'])
    work_dir = tmp_path / 'work_dirs' / osp.splitext(osp.basename(config))[0]
    assert osp.isfile(work_dir / 'iter_2.pth')
    log = _log(work_dir)
    assert FP32_NOTE in log and 'BFloat16' not in log
    assert 'Saving checkpoint at 2 iterations' in log
    metric = 'coco/bbox_mAP' if project == 'vitdet' else 'mIoU'
    assert re.search(r'Iter\(val\) \[3/3\].*' + re.escape(metric), log)


def test_toy_configs_keep_the_recipes_with_a_named_small_arch():
    for toy, recipe in ((VITDET_TOY, VITDET_B), (UPERNET_TOY, UPERNET_B)):
        cfg, base = Config.fromfile(toy), Config.fromfile(recipe)
        assert cfg.model.backbone.arch == 't' and cfg.embed_dims == 192
        assert 'resolve_arch' not in cfg  # the config's helper import is not a setting
        for key in ('type', 'patch_size', 'use_rel_pos', 'drop_path_rate'):
            assert cfg.model.backbone[key] == base.model.backbone[key], key
        assert cfg.model.backbone.init_cfg.checkpoint == MAE_TOY_CHECKPOINT
        assert cfg.optim_wrapper.type == base.optim_wrapper.type == \
            'mae_mm.MixedPrecisionOptimWrapper'
        assert cfg.optim_wrapper.cpu_dtype is None and base.optim_wrapper.cpu_dtype is None
        assert cfg.optim_wrapper.paramwise_cfg == base.optim_wrapper.paramwise_cfg
        assert cfg.runner_type == base.runner_type == 'mae_mm.MAERunner'
        assert cfg.train_cfg.max_iters == 100
    vitdet = Config.fromfile(VITDET_TOY)
    assert tuple(vitdet.model.backbone.global_attn_indexes) == (2, 5, 8, 11)
    assert vitdet.model.neck.in_channels == 192
    upernet = Config.fromfile(UPERNET_TOY)
    assert upernet.model.neck.embed_dim == 192 and upernet.model.auxiliary_head.in_channels == 192
    assert list(upernet.model.decode_head.in_channels) == [192] * 4
    assert tuple(upernet.model.backbone.out_indices) == (3, 5, 7, 11)
    # The toy pretraining has the downstream patch size and the crop size the fixtures use.
    mae = Config.fromfile(MAE_TOY)
    assert (mae.model.backbone.arch, mae.model.backbone.patch_size,
            mae.model.backbone.img_size) == ('t', PATCH, PRETRAIN_IMG)


@pytest.mark.parametrize('arch,width', [('t', 192), ('s', 384)])
def test_named_small_archs_build_and_run_in_both_toy_configs(arch, width, tmp_path):
    """Changing the ``arch = ...`` line of a toy config is all it takes: the neck and heads
    follow the width (a forward pass on one 128 px image through backbone, neck and heads)."""
    img = torch.rand(1, 3, 128, 128)
    for toy, registry, scope in ((VITDET_TOY, MMDET_MODELS, 'mmdet'),
                                 (UPERNET_TOY, MMSEG_MODELS, 'mmseg')):
        text = open(toy).read()
        assert "\narch = 't'\n" in text
        text = text.replace("\narch = 't'\n", f"\narch = '{arch}'\n")
        text = text.replace("_base_ = ['./", f"_base_ = ['{osp.dirname(toy)}/")
        path = tmp_path / osp.basename(toy)
        path.write_text(text)
        cfg = Config.fromfile(str(path))
        cfg.model.backbone.init_cfg = None  # random weights: no checkpoint needed here
        with DefaultScope.overwrite_default_scope(scope):
            model = registry.build(cfg.model).eval()
        assert model.backbone.embed_dims == width and model.backbone.num_layers == 12
        with torch.no_grad():
            feats = model.extract_feat(img)
        assert feats[0].shape[0] == 1
        if scope == 'mmdet':
            assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]  # strides 4-64
            with torch.no_grad():
                assert model.rpn_head(feats)[0][0].shape[-1] == 32
        else:
            assert [f.shape[1] for f in feats] == [width] * 4
            with torch.no_grad():
                assert model.decode_head(feats).shape[:2] == (1, 21)
