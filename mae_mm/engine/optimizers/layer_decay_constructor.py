"""Layer-wise learning-rate decay for ViT fine-tuning (BEiT / MAE), in any OpenMMLab runner."""
import re
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mae_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS

_BLOCK = re.compile(r'(?:^|\.)(?:blocks|layers)\.(\d+)\.')
_EMBEDDING_NAMES = ('cls_token', 'pos_embed', 'mask_token', 'dist_token', 'reg_token')


def vit_layer_id(name: str, num_layers: int) -> int:
    """The depth of a parameter: 0 for patch embedding, tokens and position embedding, ``i + 1``
    for Transformer block ``i``, ``num_layers + 1`` for everything above the blocks (final norm,
    fc_norm, heads, necks, decoders).

    Args:
        name (str): Parameter name in the whole model, e.g. ``backbone.blocks.3.attn.qkv.weight``.
        num_layers (int): Number of Transformer blocks of the backbone.
    """
    if 'backbone.' in name:
        local = name.split('backbone.', 1)[1]
    elif name.startswith(('blocks.', 'patch_embed.')) or name in _EMBEDDING_NAMES:
        local = name  # a bare backbone
    else:
        return num_layers + 1
    if local.split('.')[0] in _EMBEDDING_NAMES or local.startswith('patch_embed.'):
        return 0
    match = _BLOCK.search('.' + local)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def is_no_decay(name: str, param, extra_keys=()) -> bool:
    """No weight decay on norms and biases (every 1-D parameter), tokens, position tables."""
    leaf = name.split('.')[-1]
    return (param.ndim <= 1 or leaf in _EMBEDDING_NAMES or 'pos_embed' in leaf
            or 'rel_pos' in name or any(key in name for key in extra_keys))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with ``lr = base_lr * decay ** (num_layers + 1 - layer_id)``.

    ``layer_id`` is given by :func:`vit_layer_id` (patch embed/cls/pos = 0, block i = i + 1,
    the rest = num_layers + 1, i.e. factor 1). Norms, biases, tokens, position tables and
    relative-position tables get no weight decay. Works for any model whose ViT sits under
    ``backbone.`` (mmpretrain classifiers, mmdet detectors, mmseg segmentors) or a bare ViT.

    ``paramwise_cfg`` keys:
        - ``layer_decay_rate`` (float): the decay (0.65 for ViT-B fine-tuning, 0.75 for L/H).
        - ``num_layers`` (int, optional): blocks of the backbone; read from
          ``model.backbone.num_layers`` (or counted) when absent.
        - ``no_decay_keys`` (list[str], optional): more name fragments without weight decay.
        - ``custom_keys`` (dict, optional): ``{fragment: dict(lr_mult=, decay_mult=)}``, applied
          on top (e.g. a slower head).

    Each group also records ``layer_id``, ``lr_scale`` and ``param_names`` for inspection.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[bool] = None) -> None:
        cfg = dict(self.paramwise_cfg)
        decay_rate = cfg.get('layer_decay_rate')
        if decay_rate is None or not 0 < decay_rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate={decay_rate!r} must be in (0, 1] '
                             '(e.g. 0.65 for ViT-B, 0.75 for ViT-L/H fine-tuning)')
        num_layers = cfg.get('num_layers') or self._count_layers(module)
        no_decay_keys = tuple(cfg.get('no_decay_keys', ()))
        custom_keys = cfg.get('custom_keys', {})
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = vit_layer_id(name, num_layers)
            no_decay = is_no_decay(name, param, no_decay_keys)
            lr_mult, decay_mult = 1.0, 1.0
            for key in sorted(custom_keys, key=len, reverse=True):
                if key in name:
                    lr_mult = custom_keys[key].get('lr_mult', 1.0)
                    decay_mult = custom_keys[key].get('decay_mult', 1.0)
                    break
            key = (layer_id, no_decay, lr_mult, decay_mult)
            if key not in groups:
                scale = decay_rate**(num_layers + 1 - layer_id)
                groups[key] = dict(
                    params=[], param_names=[], layer_id=layer_id, lr_scale=scale,
                    lr=self.base_lr * scale * lr_mult,
                    weight_decay=0.0 if no_decay else self.base_wd * decay_mult)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        params.extend(groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1:])))
        MMLogger.get_current_instance().info(
            f'layer-wise lr decay {decay_rate} over {num_layers} blocks: '
            f'{len(groups)} parameter groups')

    @staticmethod
    def _count_layers(module: nn.Module) -> int:
        backbone = getattr(module, 'backbone', module)
        if getattr(backbone, 'num_layers', None):
            return int(backbone.num_layers)
        ids = [int(m.group(1)) for n, _ in module.named_parameters()
               for m in [_BLOCK.search('.' + n)] if m]
        if not ids:
            raise ValueError('cannot find Transformer blocks for layer decay: set '
                             'paramwise_cfg.num_layers')
        return max(ids) + 1
