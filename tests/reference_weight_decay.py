"""The weight-decay splits and layer ids of the downstream references, written down here from
their public source (not from mae-mm's code), for mae-mm's parameter names.

- detectron2's ViTDet recipe (``projects/ViTDet/configs/COCO/mask_rcnn_vitdet_b_100ep.py``):
  ``get_default_optimizer_params(model, weight_decay_norm=0.0, overrides={'pos_embed':
  {'weight_decay': 0.0}}, lr_factor_func=get_vit_lr_decay_rate)``: a parameter gets no weight
  decay when the module holding it is a ``torch.nn.LayerNorm`` (among the norm types; in ViTDet
  only the ViT's norms are: the pyramid's and the heads' ``norm='LN'`` are detectron2's own
  channel ``LayerNorm`` class, mae-mm's ``LayerNorm2d`` / mmpretrain's ``LN2d``), or when its
  own name is ``pos_embed``. Layer id (``get_vit_lr_decay_rate``): under ``backbone``,
  ``.pos_embed`` / ``.patch_embed`` -> 0, ``.blocks.i.`` -> i + 1, else L + 1.
- mmdet's port (``projects/ViTDet/vitdet/layer_decay_optimizer_constructor.py``): no weight
  decay when ``name.startswith('backbone.blocks') and 'norm' in name`` or ``'pos_embed' in
  name``; the same layer ids.
- BEiT's segmentation code and mmseg's ``LearningRateDecayOptimizerConstructor`` (UperNet):
  no weight decay when ``len(param.shape) == 1 or name.endswith('.bias') or name in
  ('pos_embed', 'cls_token')`` (whole-model names, so ``backbone.pos_embed`` decays). Layer id
  (``get_layer_id_for_vit``): ``backbone.cls_token/mask_token/pos_embed`` and
  ``backbone.patch_embed*`` -> 0, ``backbone.layers.i`` (mae-mm: ``backbone.blocks.i``) -> i + 1,
  else L + 1.
"""
from typing import Dict, Set

import torch.nn as nn


def _parameters_by_module(model: nn.Module):
    for module_name, module in model.named_modules():
        for leaf, param in module.named_parameters(recurse=False):
            yield (f'{module_name}.{leaf}' if module_name else leaf), leaf, module, param


def detectron2_no_decay(model: nn.Module) -> Set[str]:
    """Names without weight decay under detectron2's ViTDet recipe."""
    channel_norms = tuple(type(m) for m in model.modules()
                          if type(m).__name__ in ('LayerNorm2d', 'LN2d'))
    out = set()
    for name, leaf, module, _ in _parameters_by_module(model):
        torch_layer_norm = isinstance(module, nn.LayerNorm) and not isinstance(
            module, channel_norms)
        if torch_layer_norm or leaf == 'pos_embed':
            out.add(name)
    return out


def mmdet_vitdet_no_decay(model: nn.Module) -> Set[str]:
    """Names without weight decay under mmdet's ViTDet port."""
    return {name for name, _ in model.named_parameters()
            if (name.startswith('backbone.blocks') and 'norm' in name) or 'pos_embed' in name}


def beit_mmseg_no_decay(model: nn.Module) -> Set[str]:
    """Names without weight decay under BEiT's / mmseg's layer-decay constructor."""
    return {name for name, param in model.named_parameters()
            if len(param.shape) == 1 or name.endswith('.bias')
            or name in ('pos_embed', 'cls_token')}


def detectron2_layer_id(name: str, num_layers: int) -> int:
    """detectron2's ``get_vit_lr_decay_rate`` layer id (mmdet's port gives the same)."""
    layer_id = num_layers + 1
    if name.startswith('backbone'):
        if '.pos_embed' in name or '.patch_embed' in name:
            layer_id = 0
        elif '.blocks.' in name and '.residual.' not in name:
            layer_id = int(name[name.find('.blocks.'):].split('.')[2]) + 1
    return layer_id


def mmseg_layer_id(name: str, num_layers: int) -> int:
    """mmseg's ``get_layer_id_for_vit`` (``layers`` read as mae-mm's ``blocks``)."""
    if name in ('backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed'):
        return 0
    if name.startswith('backbone.patch_embed'):
        return 0
    if name.startswith('backbone.blocks'):
        return int(name.split('.')[2]) + 1
    return num_layers + 1


def reference_split(model: nn.Module) -> Dict[str, object]:
    """The reference of a model by its library: an mmseg segmentor follows BEiT/mmseg, an mmdet
    detector detectron2's ViTDet."""
    if type(model).__module__.startswith('mmseg'):
        return dict(no_decay=beit_mmseg_no_decay(model), layer_id=mmseg_layer_id)
    return dict(no_decay=detectron2_no_decay(model), layer_id=detectron2_layer_id)
