"""Layer-wise learning-rate decay for ViT fine-tuning (BEiT / MAE), in any OpenMMLab runner."""
import re
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mae_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS
from .frozen_params_constructor import log_frozen_parameters

# ``blocks.N.`` (mae-mm, official, timm, mmdet ViTDet) or ``layers.N.`` (mmpretrain, mmseg).
_BLOCK = re.compile(r'(?:^|\.)(?:blocks|layers)\.(\d+)\.')
_EMBEDDING_NAMES = ('cls_token', 'pos_embed', 'mask_token', 'dist_token', 'reg_token')
# Everything below the first block: the patch embedding (``patch_embed.proj`` or mmpretrain's
# ``patch_embed.projection``) and the tokens and position table, at any nesting depth.
_EMBEDDING = re.compile(r'(?:^|\.)(?:patch_embed|' + '|'.join(_EMBEDDING_NAMES) + r')(?:\.|$)')


def vit_layer_id(name: str, num_layers: int, backbone_prefix: Optional[str] = 'backbone.') -> int:
    """The depth of a parameter: 0 for patch embedding, tokens and position embedding, ``i + 1``
    for Transformer block ``i``, ``num_layers + 1`` for everything above the blocks (final norm,
    fc_norm, heads, necks, decoders).

    Args:
        name (str): Parameter name in the whole model, e.g. ``backbone.blocks.3.attn.qkv.weight``.
        num_layers (int): Number of Transformer blocks of the backbone.
        backbone_prefix (str, optional): Prefix of the ViT's parameters in the model; parameters
            outside it are above the blocks. None: the whole model is the ViT (a bare backbone).

    Returns:
        int: The layer id in ``[0, num_layers + 1]``.

    Raises:
        ValueError: The parameter is in a block ``i >= num_layers``.
    """
    if backbone_prefix:
        if not name.startswith(backbone_prefix):
            return num_layers + 1
        name = name[len(backbone_prefix):]
    if _EMBEDDING.search(name):
        return 0
    match = _BLOCK.search(name)
    if not match:
        return num_layers + 1
    index = int(match.group(1))
    if index >= num_layers:
        raise ValueError(f'parameter {name!r} is in block {index}, but num_layers={num_layers}: '
                         'set paramwise_cfg.num_layers to the number of Transformer blocks of '
                         'the backbone (or leave it out to read it from the model)')
    return index + 1


def is_no_decay(name: str, param, extra_keys=()) -> bool:
    """No weight decay on norms and biases (every 1-D parameter), tokens, position tables
    (the ``'mae_finetune'`` rule of :data:`DECAY_RULES`)."""
    leaf = name.split('.')[-1]
    return (param.ndim <= 1 or leaf in _EMBEDDING_NAMES or 'pos_embed' in leaf
            or 'rel_pos' in name or any(key in name for key in extra_keys))


def _no_decay_mae_finetune(name: str, param, module: nn.Module, in_backbone: bool) -> bool:
    return is_no_decay(name, param)


def _no_decay_detectron2_vitdet(name: str, param, module: nn.Module, in_backbone: bool) -> bool:
    # detectron2's ViTDet recipe: get_default_optimizer_params(weight_decay_norm=0.0,
    # overrides={'pos_embed': {'weight_decay': 0.0}}): torch.nn.LayerNorm modules (in ViTDet
    # only the ViT's; the pyramid's and heads' channel LayerNorm is another class) and any
    # parameter named pos_embed; biases, rel_pos_h/w and the patch-embedding bias decay.
    return (in_backbone and isinstance(module, nn.LayerNorm)) or name.split('.')[-1] == 'pos_embed'


def _no_decay_beit_mmseg(name: str, param, module: nn.Module, in_backbone: bool) -> bool:
    # BEiT's semantic-segmentation code and mmseg's LearningRateDecayOptimizerConstructor:
    # ``len(shape) == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token')`` on the
    # whole model's names, so a nested backbone.pos_embed / cls_token and the relative position
    # bias tables decay.
    return param.ndim == 1 or name.endswith('.bias') or name in ('pos_embed', 'cls_token')


#: Weight-decay splits by name: which parameters get no weight decay.
#: ``'mae_finetune'`` (default): every 1-D parameter (norms, biases), cls/mask/dist tokens,
#: position tables and relative-position tables (MAE's fine-tuning rule, extended to the
#: relative-position tables). ``'detectron2_vitdet'``: the backbone's LayerNorms and
#: ``pos_embed`` only (detectron2's and mmdet's ViTDet recipes). ``'beit_mmseg'``: 1-D
#: parameters and biases only (BEiT's and mmseg's UperNet recipes).
DECAY_RULES = {
    'mae_finetune': _no_decay_mae_finetune,
    'detectron2_vitdet': _no_decay_detectron2_vitdet,
    'beit_mmseg': _no_decay_beit_mmseg,
}


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with ``lr = base_lr * decay ** (num_layers + 1 - layer_id)``.

    ``layer_id`` is given by :func:`vit_layer_id` (patch embed/cls/pos = 0, block i = i + 1,
    the rest = num_layers + 1, i.e. factor 1). Which parameters get no weight decay is
    ``paramwise_cfg.decay_rule`` (:data:`DECAY_RULES`); by default norms, biases, tokens,
    position tables and relative-position tables. Works for any model whose ViT sits under
    ``backbone.`` (mmpretrain classifiers, mmdet detectors, mmseg segmentors) or a bare ViT;
    from another scope write ``constructor='mae_mm.LayerDecayOptimWrapperConstructor'``.
    Frozen parameters (``requires_grad=False``) are left out of the optimizer and reported in
    one log line (``N frozen parameters (requires_grad=False) are not optimized: ...``).

    ``paramwise_cfg`` keys:
        - ``layer_decay_rate`` (float): the decay (0.65 for ViT-B fine-tuning, 0.75 for L/H).
          ``decay_rate`` (the name mmdet's ViTDet configs use) is accepted as well.
        - ``num_layers`` (int, optional): blocks of the backbone; read from
          ``model.backbone.num_layers`` (or ``depth``), else counted, when absent.
        - ``backbone_prefix`` (str, optional): where the ViT sits in the model; default
          ``'backbone.'`` when the model has a ``backbone``, else the model is the ViT.
        - ``decay_rule`` (str, optional): the weight-decay split, one of :data:`DECAY_RULES`:
          ``'mae_finetune'`` (default: every 1-D parameter, tokens, position and
          relative-position tables), ``'detectron2_vitdet'`` (only the backbone's LayerNorms and
          ``pos_embed``; biases, ``rel_pos_h/w``, pyramid and head norms decay, as detectron2's
          and mmdet's ViTDet) or ``'beit_mmseg'`` (only 1-D parameters and biases; tokens,
          ``pos_embed`` and relative position bias tables decay, as BEiT's and mmseg's UperNet).
        - ``no_decay_keys`` (list[str], optional): more name fragments without weight decay.
        - ``custom_keys`` (dict, optional): ``{fragment: dict(lr_mult=, decay_mult=)}``, applied
          on top (e.g. a slower head); the longest matching fragment wins.

    Each group also records ``layer_id``, ``lr_scale`` and ``param_names`` for inspection.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[bool] = None) -> None:
        """Append the layer-decayed parameter groups of ``module`` to ``params``."""
        cfg = dict(self.paramwise_cfg)
        decay_rate = self._decay_rate(cfg)
        backbone_prefix = cfg.get('backbone_prefix',
                                  'backbone.' if hasattr(module, 'backbone') else None)
        num_layers = cfg.get('num_layers') or self._count_layers(module)
        no_decay_keys = tuple(cfg.get('no_decay_keys', ()))
        rule_name = cfg.get('decay_rule', 'mae_finetune')
        if rule_name not in DECAY_RULES:
            raise ValueError(f'paramwise_cfg.decay_rule={rule_name!r} is unknown: use one of '
                             f'{sorted(DECAY_RULES)}')
        rule = DECAY_RULES[rule_name]
        owners = {f'{prefix}.{leaf}' if prefix else leaf: sub
                  for prefix, sub in module.named_modules()
                  for leaf, _ in sub.named_parameters(recurse=False)}
        custom_keys = cfg.get('custom_keys', {})
        sorted_custom = sorted(sorted(custom_keys), key=len, reverse=True)
        groups = {}
        log_frozen_parameters(module)
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = vit_layer_id(name, num_layers, backbone_prefix)
            in_backbone = not backbone_prefix or name.startswith(backbone_prefix)
            no_decay = (rule(name, param, owners.get(name), in_backbone)
                        or any(key in name for key in no_decay_keys))
            lr_mult, decay_mult = 1.0, 1.0
            for key in sorted_custom:
                if key in name:
                    lr_mult = custom_keys[key].get('lr_mult', 1.0)
                    decay_mult = custom_keys[key].get('decay_mult', 1.0)
                    break
            key = (layer_id, no_decay, lr_mult, decay_mult)
            if key not in groups:
                scale = decay_rate**(num_layers + 1 - layer_id)
                group = dict(params=[], param_names=[], layer_id=layer_id, lr_scale=scale,
                             lr=self.base_lr * scale * lr_mult)
                if self.base_wd is not None:  # an optimizer without weight decay keeps none
                    group['weight_decay'] = 0.0 if no_decay else self.base_wd * decay_mult
                groups[key] = group
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        params.extend(groups[k] for k in sorted(groups))
        MMLogger.get_current_instance().info(
            f'layer-wise lr decay {decay_rate} over {num_layers} blocks, weight-decay split '
            f'{rule_name!r}: {len(groups)} parameter groups')

    @staticmethod
    def _decay_rate(cfg: dict) -> float:
        rate = cfg.get('layer_decay_rate', cfg.get('decay_rate'))
        if 'layer_decay_rate' in cfg and 'decay_rate' in cfg \
                and cfg['layer_decay_rate'] != cfg['decay_rate']:
            raise ValueError(f"paramwise_cfg has layer_decay_rate={cfg['layer_decay_rate']} and "
                             f"decay_rate={cfg['decay_rate']}: keep only layer_decay_rate")
        if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate={rate!r} must be in (0, 1] '
                             '(e.g. 0.65 for ViT-B, 0.75 for ViT-L/H fine-tuning)')
        return float(rate)

    @staticmethod
    def _count_layers(module: nn.Module) -> int:
        backbone = getattr(module, 'backbone', module)
        for attr in ('num_layers', 'depth'):
            if isinstance(getattr(backbone, attr, None), int) and getattr(backbone, attr) > 0:
                return int(getattr(backbone, attr))
        ids = [int(m.group(1)) for n, _ in backbone.named_parameters()
               for m in [_BLOCK.search(n)] if m]
        if not ids:
            raise ValueError('cannot find Transformer blocks for layer decay: set '
                             'paramwise_cfg.num_layers')
        return max(ids) + 1
