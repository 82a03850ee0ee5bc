# MAE fine-tuning optimisation, ViT-B values (official FINETUNE.md; paper Table 9): AdamW
# (0.9, 0.999), lr 2e-3 at global batch 1024 (blr 5e-4 x 1024/256), weight decay 0.05 (none on
# norms, biases, cls token and position embedding), layer-wise lr decay 0.65 (parameter group of
# layer i: lr x 0.65 ** (num_layers + 1 - i); patch embedding/cls/pos = layer 0, block j = layer
# j + 1, fc_norm and head factor 1), 5 warm-up epochs then cosine to 1e-6, 100 epochs.
#
# Precision (docs/precision.md): bf16 autocast on GPUs with native bf16 (Ampere or newer) and
# on CPU; GPUs without bf16 (V100, T4) stop at start-up with a one-line error naming the fp16
# option, --cfg-options optim_wrapper.dtype=float16 (fp16 autocast + dynamic loss scaling). The
# official FINETUNE.md reports NaNs fine-tuning ViT-H in fp16 on GPUs (never on TPUs); bf16 has
# fp32's range.
# No gradient clipping: the official main_finetune.py has --clip_grad default None and the
# FINETUNE.md commands do not set it; mmpretrain's MAE fine-tuning configs do not clip either.
# With fp16 on an older GPU, clipping is an option:
#   --cfg-options optim_wrapper.dtype=float16 optim_wrapper.clip_grad.max_norm=5.0
lr = 2e-3
min_lr = 1e-6
warmup_epochs = 5
max_epochs = 100

optim_wrapper = dict(
    type='MixedPrecisionOptimWrapper',
    loss_scale='dynamic',  # fp16 needs it; with bf16 it only skips an overflowing step
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.65))

# Per-iteration schedule. The official code scales the *whole* schedule (min_lr included) by
# each group's layer-decay factor; eta_min_ratio reproduces that: every group ends at
# min_lr x its factor.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min_ratio=min_lr / lr,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# lr above is for the global batch 1024; `--auto-scale-lr` rescales it to the actual batch.
auto_scale_lr = dict(base_batch_size=1024)
