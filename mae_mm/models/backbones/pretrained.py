"""What fine-tuning and downstream tasks add to the MAE encoder: loading a pretrained checkpoint
of any format with a report of its keys, and freezing the first stages."""
import logging

from mmengine.logging import MMLogger

from ..layers import resize_pos_embed


class PretrainedEncoderMixin:
    """For :class:`MaskedViT` (and its subclasses): ``init_weights`` from a ``Pretrained``
    init_cfg, ``load_pretrained`` and ``_freeze_stages``.

    Reads the encoder's ``init_cfg``, ``pos_embed``, ``grid_size``, ``frozen_stages``,
    ``num_layers``, ``patch_embed``, ``blocks``, ``norm`` and ``cls_token``.
    """

    # Keys a pretraining checkpoint never has: added by fine-tuning or downstream subclasses.
    EXPECTED_MISSING_KEYS = (r'^fc_norm\.', r'^mask_token$', r'rel_pos', r'relative_position')

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` from any
        checkpoint format (mae-mm, official MAE, timm, mmpretrain), resampling the position table
        to this model's grid and logging every missing and unexpected key by name."""
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix', 'backbone.'))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint, prefix: str = 'backbone.') -> str:
        """Load encoder weights from a checkpoint file or dict of any supported format.

        Returns:
            str: The key report (also logged). Missing keys other than those of
            ``EXPECTED_MISSING_KEYS`` are logged as a warning.
        """
        from mae_mm.utils.checkpoint import load_backbone_state_dict, split_key_mismatch
        state = load_backbone_state_dict(checkpoint, prefix=prefix)
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            num = state['pos_embed'].shape[1] - 1
            side = int(round(num**0.5))
            if side * side != num:
                raise ValueError(f'checkpoint pos_embed has {num} grid tokens, not a square '
                                 'grid: resize it to this model before loading')
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], (side, side),
                                                  self.grid_size)
        mismatch = split_key_mismatch(self.state_dict(), state, self.EXPECTED_MISSING_KEYS)
        name = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
        report = mismatch.report(f'{type(self).__name__} <- {name}')
        logger = MMLogger.get_current_instance()
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
