"""Shrinking the real evaluation configs to a tiny ViT on 32 px crops, for CPU tests."""
import importlib.util
import os.path as osp
from typing import Dict

import torch
from mmengine.config import Config

from mae_mm.registry import MODELS
from ..conftest import REPO_ROOT, TINY_ARCH, tiny_mae_cfg
from ..test_utils._foreign_layouts import official_checkpoint, timm_state_dict

TINY_DIMS = TINY_ARCH['embed_dims']
TINY_LAYERS = TINY_ARCH['num_layers']
NUM_CLASSES = 3


def load_tool(relative_path: str):
    """A script under ``tools/`` as a module (``tools`` is not a package)."""
    name = 'mae_mm_tool_' + osp.splitext(osp.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO_ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_checkpoints(folder) -> Dict[str, str]:
    """A tiny MAE (32 px, patch 8) saved in three formats; returns {format: path}.

    ``mae_mm``: the MMEngine checkpoint of pretraining (``state_dict`` with ``backbone.`` and
    ``neck.`` keys); ``official``: ``{'model': encoder + decoder keys}`` as facebookresearch/mae
    saves (``mae_visualize_vit_*.pth``); ``timm``: the bare encoder state dict of timm's
    ``vit_*_224.mae``. The official and timm files are built from those projects' key names,
    written by hand (``tests/test_utils/_foreign_layouts.py``), not from mae-mm's keys.
    """
    torch.manual_seed(1)
    model = MODELS.build(tiny_mae_cfg(img_size=32, patch_size=8))
    state = model.state_dict()
    paths = {name: osp.join(str(folder), f'{name}.pth') for name in ('mae_mm', 'official', 'timm')}
    torch.save({'meta': {'epoch': 1}, 'state_dict': state}, paths['mae_mm'])
    torch.save(official_checkpoint(state), paths['official'])
    torch.save(timm_state_dict(state), paths['timm'])
    return paths


def _shrink_pipeline(pipeline, factor: float) -> None:
    for step in pipeline:
        kind = step['type'].split('.')[-1]
        if kind == 'RandomResizedCrop':
            step['scale'] = int(round(step['scale'] * factor))
        elif kind == 'ResizeEdge':
            step['scale'] = int(round(step['scale'] * factor))
        elif kind == 'CenterCrop':
            step['crop_size'] = int(round(step['crop_size'] * factor))


def tiny_eval_cfg(config: str, checkpoint: str, train_dir: str, val_dir: str, work_dir,
                  batch_size: int = 12) -> Config:
    """The real ``config`` with a 2-block ViT (patch 8) at 32 px (64 px for the 448-px configs,
    so that the 4 x 4 checkpoint grid is resized to 8 x 8), 3 classes, the given folders and
    checkpoint, one epoch, no worker processes."""
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    backbone = cfg.model.backbone
    img_size = backbone.get('img_size', 224)
    tiny_size = 64 if img_size >= 448 else 32
    factor = tiny_size / img_size
    backbone.arch = dict(TINY_ARCH)
    backbone.img_size = tiny_size
    backbone.patch_size = 8
    backbone.init_cfg.checkpoint = checkpoint
    if backbone.get('frozen_stages', -1) > 0:  # linear probe: the whole (tiny) encoder
        backbone.frozen_stages = TINY_LAYERS
    if 'trainable_blocks' in backbone:
        backbone.trainable_blocks = min(backbone.trainable_blocks, TINY_LAYERS)
    cfg.model.head.in_channels = TINY_DIMS
    cfg.model.head.num_classes = NUM_CLASSES
    cfg.model.data_preprocessor.num_classes = NUM_CLASSES
    if cfg.model.get('neck'):
        cfg.model.neck.input_features = TINY_DIMS
    for split, folder in (('train', train_dir), ('val', val_dir), ('test', val_dir)):
        loader = cfg[f'{split}_dataloader']
        loader.update(batch_size=batch_size, num_workers=0, persistent_workers=False,
                      pin_memory=False)
        loader.dataset.update(data_root=folder, data_prefix='')
        _shrink_pipeline(loader.dataset.pipeline, factor)
    cfg.val_evaluator = cfg.test_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, ))
    cfg.train_cfg.max_epochs = 1
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0)
    cfg.resume = False
    return cfg
