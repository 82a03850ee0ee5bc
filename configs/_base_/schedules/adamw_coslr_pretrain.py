# The paper's pretraining optimisation (He et al. 2021, Table 8): AdamW, lr = 1.5e-4 x batch/256
# at batch 4096, betas (0.9, 0.95), wd 0.05 (none on norms, biases, position embeddings and
# tokens), 40 warm-up epochs then cosine to 0. Mixed precision (fp16 + dynamic loss scaling on
# GPUs, bf16 on CPU) with optional gradient clipping.
optim_wrapper = dict(
    type='MixedPrecisionOptimWrapper',
    loss_scale='dynamic',
    # mmengine's constructor, with the fixed sin-cos position tables (frozen) reported in one
    # log line instead of one per parameter; the parameter groups are mmengine's.
    constructor='FrozenAwareOptimWrapperConstructor',
    # torch's default AdamW implementation, as the references. Option:
    # --cfg-options optim_wrapper.optimizer.fused=True (one kernel over all parameters instead
    # of a loop of small ops, the same update: tests/test_models/test_fast_paths.py; CUDA with
    # any supported torch, CPU with torch >= 2.4).
    optimizer=dict(type='AdamW', lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95), weight_decay=0.05),
    # clip_grad=dict(max_norm=3.0),  # uncomment to clip (recommended with fp16), or pass
    # --cfg-options optim_wrapper.clip_grad.max_norm=3.0 to any recipe
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
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min=0.0, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# lr above is for the global batch 4096; `--auto-scale-lr` rescales it to the actual batch.
auto_scale_lr = dict(base_batch_size=4096)
