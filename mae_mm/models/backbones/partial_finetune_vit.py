"""PartialFinetuneViT: the MAE encoder with only its last k blocks (or parts of them) trainable."""
from typing import Optional, Sequence

from mmengine.logging import MMLogger

from mae_mm.registry import MODELS
from .masked_vit import MaskedViT, resolve_arch

#: Sub-modules of a Transformer block that ``trainable_block_parts`` may name.
BLOCK_PARTS = ('norm1', 'attn', 'norm2', 'mlp')


@MODELS.register_module()
class PartialFinetuneViT(MaskedViT):
    """:class:`MaskedViT` for partial fine-tuning (MAE paper, Fig. 9).

    Only the last ``trainable_blocks`` Transformer blocks are trained; the patch embedding, cls
    token, position embedding and the blocks before them are frozen (no gradient, eval mode).
    ``trainable_blocks=0`` trains no block (only what sits above them: ``fc_norm`` and the head,
    a linear probe under the fine-tuning recipe), ``trainable_blocks=num_layers`` fine-tunes the
    whole encoder. ``trainable_block_parts`` restricts the trained blocks to some of their
    sub-modules, e.g. ``('mlp',)`` with ``trainable_blocks=1`` tunes only the MLP of the last
    block (paper: 79.1% for ViT-L, against 73.5% for the linear probe).

    The final LayerNorm ``norm`` is frozen whenever it is not applied (``final_norm=False``, the
    average-pooling setting), so that distributed training sees no unused trainable parameter.

    Args:
        trainable_blocks (int): Number of trailing blocks to train, in ``[0, num_layers]``.
        trainable_block_parts (Sequence[str], optional): Sub-modules of the trained blocks that
            are trained, among ``'norm1'``, ``'attn'``, ``'norm2'``, ``'mlp'``; None trains them
            whole.
        **kwargs: :class:`MaskedViT` arguments except ``frozen_stages``, which is derived.
    """

    def __init__(self, trainable_blocks: int,
                 trainable_block_parts: Optional[Sequence[str]] = None, **kwargs):
        if 'frozen_stages' in kwargs:
            raise ValueError('model.backbone.frozen_stages is derived from trainable_blocks in '
                             'PartialFinetuneViT: remove frozen_stages from the config')
        num_layers = resolve_arch(kwargs.get('arch', 'base'))['num_layers']
        if not isinstance(trainable_blocks, int) or not 0 <= trainable_blocks <= num_layers:
            raise ValueError(f'model.backbone.trainable_blocks={trainable_blocks!r} must be an '
                             f'int in [0, {num_layers}] (the number of blocks of this arch)')
        if trainable_block_parts is not None:
            parts = tuple(trainable_block_parts)
            unknown = sorted(set(parts) - set(BLOCK_PARTS))
            if unknown or not parts:
                raise ValueError(f'model.backbone.trainable_block_parts={parts!r}: give a '
                                 f'non-empty subset of {BLOCK_PARTS}, or None for whole blocks')
            trainable_block_parts = parts
        self.trainable_blocks = trainable_blocks
        self.trainable_block_parts = trainable_block_parts
        # Full fine-tuning trains the embeddings too; otherwise stage 0 and the first
        # ``num_layers - k`` blocks are MaskedViT's frozen stages.
        partial = trainable_blocks < num_layers or trainable_block_parts is not None
        frozen_stages = num_layers - trainable_blocks if partial else -1
        super().__init__(frozen_stages=frozen_stages, **kwargs)
        self._freeze_partial()
        MMLogger.get_current_instance().info(self.describe_trainable())

    def trained_blocks(self) -> range:
        """Indices of the blocks that are (at least partly) trained."""
        return range(self.num_layers - self.trainable_blocks, self.num_layers)

    def _frozen_extra_modules(self) -> list:
        """Modules frozen on top of MaskedViT's frozen stages."""
        modules = [] if self.final_norm else [self.norm]
        if self.trainable_block_parts is not None:
            for index in self.trained_blocks():
                block = self.blocks[index]
                modules += [getattr(block, part) for part in BLOCK_PARTS
                            if part not in self.trainable_block_parts]
        return modules

    def _freeze_partial(self) -> None:
        for module in self._frozen_extra_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'PartialFinetuneViT':
        """Set the mode; frozen parts stay in eval mode."""
        super().train(mode)
        self._freeze_partial()
        return self

    def describe_trainable(self) -> str:
        """One line saying what is trained, e.g. for the log."""
        total = sum(p.numel() for p in self.parameters())
        trained = sum(p.numel() for p in self.parameters() if p.requires_grad)
        blocks = list(self.trained_blocks())
        if not blocks:
            where = 'no block'
        elif len(blocks) == 1:
            where = f'block {blocks[0]}'
        else:
            where = f'blocks {blocks[0]}-{blocks[-1]}'
        if self.trainable_block_parts is not None:
            where += f' ({", ".join(self.trainable_block_parts)} only)'
        return (f'PartialFinetuneViT: training {where} of {self.num_layers}; '
                f'{trained:,} of {total:,} encoder parameters trainable')
