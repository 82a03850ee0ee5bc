# The paper's pretraining optimisation (He et al. 2021, Table 8): AdamW, lr = 1.5e-4 x batch/256
# at batch 4096, betas (0.9, 0.95), wd 0.05 (none on norms, biases, position embeddings and
# tokens), 40 warm-up epochs then cosine to 0.
#
# Precision (docs/precision.md): bf16 autocast, on GPUs with native bf16 (Ampere or newer: A100,
# H100, L4, RTX 30xx and later) and on CPU. fp16 autocast is the paper code's, but MAE runs in
# fp16 are reported to turn NaN late (open-mmlab/mmpretrain#1632: mmpretrain's fp16 ViT-B
# recipe on an A100, NaN from epoch 163), and bf16 has fp32's range. GPUs without bf16 (V100,
# T4) stop at start-up with a one-line error naming the fp16 option:
#   --cfg-options optim_wrapper.dtype=float16   (fp16 autocast + the dynamic loss scaling below)
# No gradient clipping: the official pretraining (main_pretrain.py) and mmpretrain's MAE
# recipes do not clip. To clip anyway: --cfg-options optim_wrapper.clip_grad.max_norm=3.0
optim_wrapper = dict(
    type='MixedPrecisionOptimWrapper',
    loss_scale='dynamic',  # fp16 needs it; with bf16 it only skips an overflowing step
    dtype='bfloat16',
    # mmengine's constructor, with the fixed sin-cos position tables (frozen) reported in one
    # log line instead of one per parameter; the parameter groups are mmengine's.
    constructor='FrozenAwareOptimWrapperConstructor',
    # torch's default AdamW implementation, as the references. Option:
    # --cfg-options optim_wrapper.optimizer.fused=True (one kernel over all parameters instead
    # of a loop of small ops, the same update: tests/test_models/test_fast_paths.py; CUDA with
    # any supported torch, CPU with torch >= 2.4).
    optimizer=dict(type='AdamW', lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95), weight_decay=0.05),
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
