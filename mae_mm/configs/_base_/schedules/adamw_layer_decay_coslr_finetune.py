# MAE fine-tuning optimisation, ViT-B values (official FINETUNE.md; paper Table 9); twin of
# configs/_base_/schedules/adamw_layer-decay_coslr_finetune.py: AdamW (0.9, 0.999), lr 2e-3 at
# global batch 1024, wd 0.05, layer-wise lr decay 0.65, 5 warm-up epochs then cosine to 1e-6,
# 100 epochs. bf16 autocast (docs/precision.md; GPUs without bf16, e.g. V100 / T4:
# optim_wrapper.update(dtype='float16') in a child config); no gradient clipping, as the
# official main_finetune.py (--clip_grad None) and mmpretrain's MAE fine-tuning configs.
from mmengine.optim import CosineAnnealingLR, LinearLR
from mmengine.runner import EpochBasedTrainLoop
from torch.optim import AdamW

from mae_mm.engine.optimizers import (LayerDecayOptimWrapperConstructor,
                                      MixedPrecisionOptimWrapper)

lr = 2e-3
min_lr = 1e-6
warmup_epochs = 5
max_epochs = 100

optim_wrapper = dict(
    type=MixedPrecisionOptimWrapper,
    loss_scale='dynamic',  # fp16 needs it; with bf16 it only skips an overflowing step
    dtype='bfloat16',
    optimizer=dict(type=AdamW, lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    constructor=LayerDecayOptimWrapperConstructor,
    paramwise_cfg=dict(layer_decay_rate=0.65))

# Every layer-decay group ends at min_lr x its factor (eta_min_ratio), as the official code.
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type=CosineAnnealingLR, T_max=max_epochs - warmup_epochs, eta_min_ratio=min_lr / lr,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type=EpochBasedTrainLoop, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# lr above is for the global batch 1024; `--auto-scale-lr` rescales it to the actual batch.
auto_scale_lr = dict(base_batch_size=1024)
