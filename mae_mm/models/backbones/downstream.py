"""What fine-tuning, probing and downstream tasks use of the MAE encoder: loading a pretrained
checkpoint of any format with a report of its keys, freezing the first stages, and the unmasked
forward pass with its output formats."""
import logging
import os
from typing import Tuple

import torch
from mmengine.logging import MMLogger

from ..layers import layer_norm_eps, resize_pos_embed

OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')


class DownstreamMixin:
    """For :class:`MaskedViT` (and its subclasses): ``init_weights`` from a ``Pretrained``
    init_cfg, ``load_pretrained``, ``_freeze_stages`` and ``forward_features``.

    Reads the encoder's modules and settings (``patch_embed``, ``cls_token``, ``pos_embed``,
    ``blocks``, ``norm``, ``fc_norm``, ``grid_size``, ``num_layers``, ``frozen_stages``,
    ``final_norm``, ``out_type``, ``out_indices``, ``init_cfg``).
    """

    # Keys a pretraining checkpoint never has: added by fine-tuning or downstream subclasses.
    EXPECTED_MISSING_KEYS = (r'^fc_norm\.', r'^mask_token$', r'rel_pos', r'relative_position')

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` from any
        checkpoint format (mae-mm, official MAE, timm, mmpretrain, Hugging Face ViTMAE folder or
        file), resampling the position table
        to this model's grid and logging every missing and unexpected key by name."""
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix', 'backbone.'))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint, prefix: str = 'backbone.') -> str:
        """Load encoder weights from a checkpoint file, Hugging Face model folder or dict of any
        supported format.

        Returns:
            str: The key report (also logged). Missing keys other than those of
            ``EXPECTED_MISSING_KEYS`` are logged as a warning, and so is a Hugging Face
            checkpoint whose LayerNorm eps (``config.json``) differs from this model's ``norm_eps``
            (one line naming the config field; the model is not changed).
        """
        from mae_mm.utils.checkpoint import (detect_format, hf_config_of,
                                             load_backbone_state_dict, norm_eps_note,
                                             read_checkpoint, split_key_mismatch)
        name = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else 'checkpoint'
        if isinstance(checkpoint, (str, os.PathLike)):
            checkpoint = read_checkpoint(checkpoint, map_location='cpu')
        state = load_backbone_state_dict(checkpoint, prefix=prefix)
        logger = MMLogger.get_current_instance()
        if detect_format(checkpoint) == 'hf':
            note = norm_eps_note(hf_config_of(checkpoint),
                                 {'model.backbone.norm_eps': layer_norm_eps(self)}, name)
            if note:
                logger.warning(note)
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            num = state['pos_embed'].shape[1] - 1
            side = int(round(num**0.5))
            if side * side != num:
                raise ValueError(f'checkpoint pos_embed has {num} grid tokens, not a square '
                                 'grid: resize it to this model before loading')
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], (side, side),
                                                  self.grid_size)
        mismatch = split_key_mismatch(self.state_dict(), state, self.EXPECTED_MISSING_KEYS)
        report = mismatch.report(f'{type(self).__name__} <- {name}')
        logger.log(logging.INFO if mismatch.ok else logging.WARNING, report)
        for key, _, _ in mismatch.shape_mismatch:
            state.pop(key)
        self.load_state_dict(state, strict=False)
        self._freeze_stages()
        return report

    def _freeze_stages(self) -> None:
        """Freeze stage 0 (patch embedding, cls, position) and the first ``frozen_stages``
        blocks (and ``norm`` when all are): no gradient, eval mode. -1 freezes nothing."""
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed, *self.blocks[:self.frozen_stages]]
        if self.frozen_stages >= self.num_layers:
            frozen.append(self.norm)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        self.cls_token.requires_grad = False
        self.pos_embed.requires_grad = False

    def train(self, mode: bool = True):
        """Set the mode; frozen stages stay in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Encode every patch (no masking, no shuffling); outputs per ``out_indices``."""
        tokens, grid = self.patch_embed(x)
        n = tokens.shape[0]
        pos = self.position_embedding(grid)
        cls = (self.cls_token + pos[:, :1]).expand(n, -1, -1)
        tokens = torch.cat([cls, tokens + pos[:, 1:]], dim=1)
        outs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i == self.num_layers - 1 and self.final_norm:
                tokens = self.norm(tokens)
            if i in self.out_indices:
                outs.append(self._format_output(tokens, grid))
        return tuple(outs)

    def _format_output(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        if self.out_type == 'raw':
            return tokens
        if self.out_type == 'cls_token':
            return tokens[:, 0]
        patches = tokens[:, 1:]
        if self.out_type == 'featmap':
            return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        return self.fc_norm(patches.mean(dim=1))  # avg_featmap
