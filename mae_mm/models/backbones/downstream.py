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


def _size(size: Tuple[int, int]):
    return size[0] if size[0] == size[1] else tuple(size)


class DownstreamMixin:
    """For :class:`MaskedViT` (and its subclasses): ``init_weights`` from a ``Pretrained``
    init_cfg, ``load_pretrained``, ``_freeze_stages`` and ``forward_features``.

    Reads the encoder's modules and settings (``patch_embed``, ``cls_token``, ``pos_embed``,
    ``blocks``, ``norm``, ``fc_norm``, ``grid_size``, ``num_layers``, ``frozen_stages``,
    ``final_norm``, ``out_type``, ``out_indices``, ``init_cfg``).
    """

    #: Keys a pretraining checkpoint never has (added by fine-tuning: the pooled-feature norm of
    #: ``out_type='avg_featmap'``; the mask-token ablation's token). Subclasses add their own.
    EXPECTED_MISSING_KEYS = (r'^fc_norm\.', r'^mask_token$')
    #: Checkpoint keys this model may not use without it being an error (the same modules, in a
    #: fine-tuned or ablation checkpoint loaded into a model without them).
    EXPECTED_UNEXPECTED_KEYS = (r'^fc_norm\.', r'^mask_token$')

    def expected_missing_keys(self) -> Tuple[str, ...]:
        """Patterns of keys that may be absent from a pretrained checkpoint: those of
        ``EXPECTED_MISSING_KEYS``, and the final ``norm`` when it is not applied
        (``final_norm=False``; official fine-tuned checkpoints drop it)."""
        return tuple(self.EXPECTED_MISSING_KEYS) + (() if self.final_norm else (r'^norm\.', ))

    def position_table_grid(self) -> Tuple[Tuple[int, int], str]:
        """The grid of the ``pos_embed`` parameter, and the config fields that set it (named in
        the load report when a checkpoint's table is resampled to it): the training grid
        (``img_size / patch_size``) here; :class:`ViTDetBackbone` keeps the pretraining grid."""
        return tuple(self.grid_size), (f'model.backbone.img_size={_size(self.img_size)}, '
                                       f'patch_size={self.patch_size}')

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` from any
        checkpoint format (mae-mm, official MAE, timm, mmpretrain, Hugging Face ViTMAE folder or
        file), resampling the position table to this model's grid and logging the key report.

        A checkpoint that does not fit (missing keys beyond :meth:`expected_missing_keys`,
        unexpected keys, other shapes: another architecture) raises
        :class:`~mae_mm.utils.checkpoint.PretrainedKeyMismatchError` before any training;
        ``allow_partial=True`` in the init_cfg loads the keys that fit instead, with the report
        as a warning."""
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg and cfg.get('type') == 'Pretrained':
            unknown = sorted(set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location',
                                         'allow_partial', '_scope_'})
            if unknown:
                raise ValueError(f'model.backbone.init_cfg has unknown keys {unknown}: a '
                                 "Pretrained init_cfg takes checkpoint, prefix and allow_partial")
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix', 'backbone.'),
                                 allow_partial=bool(cfg.get('allow_partial', False)))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint, prefix: str = 'backbone.',
                        allow_partial: bool = False) -> str:
        """Load encoder weights from a checkpoint file, Hugging Face model folder or dict of any
        supported format.

        Args:
            checkpoint (str | PathLike | Mapping): The checkpoint.
            prefix (str): Prefix of the encoder's keys in it (``'backbone.'``).
            allow_partial (bool): Load the keys that fit when others do not (the report is then a
                warning) instead of raising. Defaults to False.

        Returns:
            str: The key report (also logged). A Hugging Face checkpoint whose LayerNorm eps
            (``config.json``) differs from this model's ``norm_eps`` is a warning (one line
            naming the config field; the model is not changed).

        Raises:
            PretrainedKeyMismatchError: Missing keys other than :meth:`expected_missing_keys`,
                unexpected keys or keys of another shape, unless ``allow_partial``; one line
                naming the file, the keys (grouped) and the fix. Nothing is loaded.
        """
        from mae_mm.utils.checkpoint import (PretrainedKeyMismatchError, detect_format,
                                             hf_config_of, load_backbone_state_dict,
                                             norm_eps_note, read_checkpoint, split_key_mismatch)
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
        resampled = None
        table_grid, table_fields = self.position_table_grid()
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            num = state['pos_embed'].shape[1] - 1
            side = int(round(num**0.5))
            if side * side != num:
                raise ValueError(f'checkpoint pos_embed has {num} grid tokens, not a square '
                                 'grid: resize it to this model before loading')
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], (side, side), table_grid)
            resampled = (side, side)
        mismatch = split_key_mismatch(self.state_dict(), state, self.expected_missing_keys(),
                                      self.EXPECTED_UNEXPECTED_KEYS)
        report = mismatch.report(f'{type(self).__name__} <- {name}')
        if resampled is not None:
            report += (f'\nposition table resampled from the checkpoint\'s {resampled[0]} x '
                       f'{resampled[1]} grid to {table_grid[0]} x {table_grid[1]} '
                       f'({table_fields})')
        if not mismatch.ok and not allow_partial:
            logger.error(report)
            raise PretrainedKeyMismatchError(
                f'model.backbone.init_cfg: checkpoint {name!r} does not fit '
                f'{type(self).__name__} ({len(mismatch.matched)} keys fit; '
                f'{mismatch.summary()}): use a checkpoint of this architecture (arch, '
                'patch_size), or set model.backbone.init_cfg.allow_partial=True to load only the '
                'keys that fit')
        if not mismatch.ok:
            report += ('\nallow_partial=True: the keys that fit are loaded, the others keep '
                       'their initial values')
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
