# The paper's pretraining optimisation (He et al. 2021, Table 8); twin of
# configs/_base_/schedules/adamw_coslr_pretrain.py. AdamW, lr = 1.5e-4 x batch/256 at batch
# 4096, betas (0.9, 0.95), wd 0.05 (none on norms, biases, position embeddings and tokens), 40
# warm-up epochs then cosine to 0. bf16 autocast (docs/precision.md; GPUs without bf16, e.g. V100 /
# T4: optim_wrapper.update(dtype='float16') in a child config); no gradient clipping, as the
# official pretraining and mmpretrain's MAE recipes.
from mmengine.optim import CosineAnnealingLR, LinearLR
from mmengine.runner import EpochBasedTrainLoop
from torch.optim import AdamW

from mae_mm.engine.optimizers import (FrozenAwareOptimWrapperConstructor,
                                      MixedPrecisionOptimWrapper)

optim_wrapper = dict(
    type=MixedPrecisionOptimWrapper,
    loss_scale='dynamic',  # fp16 needs it; with bf16 it only skips an overflowing step
    dtype='bfloat16',
    constructor=FrozenAwareOptimWrapperConstructor,
    optimizer=dict(type=AdamW, lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
        }))

warmup_epochs = 40
max_epochs = 1600
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAnnealingLR, T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type=EpochBasedTrainLoop, max_epochs=max_epochs)

# lr above is for the global batch 4096; `--auto-scale-lr` rescales it to the actual batch.
auto_scale_lr = dict(base_batch_size=4096)
