# MAE fine-tuning optimisation, ViT-B values (official FINETUNE.md; paper Table 9): AdamW
# (0.9, 0.999), lr 2e-3 at global batch 1024 (blr 5e-4 x 1024/256), weight decay 0.05 (none on
# norms, biases, cls token and position embedding), layer-wise lr decay 0.65 (parameter group of
# layer i: lr x 0.65 ** (num_layers + 1 - i); patch embedding/cls/pos = layer 0, block j = layer
# j + 1, fc_norm and head factor 1), 5 warm-up epochs then cosine to 1e-6, 100 epochs.
#
# Mixed precision (fp16 + dynamic loss scaling on GPUs, bf16 on CPU) with gradient clipping:
# fp16 fine-tuning without clipping is known to go NaN (facebookresearch/mae#42, #77;
# open-mmlab/mmpretrain#1632). max_norm 5 is a mae-mm choice, not a paper value.
lr = 2e-3
min_lr = 1e-6
warmup_epochs = 5
max_epochs = 100

optim_wrapper = dict(
    type='MixedPrecisionOptimWrapper',
    loss_scale='dynamic',
    clip_grad=dict(max_norm=5.0),
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
