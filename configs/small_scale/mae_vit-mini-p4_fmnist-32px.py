# MAE pretraining of the small-scale study: a 4-block, 64-wide ViT (4 heads) with 4x4 patches on
# Fashion-MNIST training images (labels unused) upsampled to 32 px, so 8x8 = 64 patches.
# Decoder: 4 blocks, 32 wide (half the encoder width, as the paper's 512 for ViT-L's 1024);
# norm-pix targets; mask ratio 0.75. The study varies mask ratio, decoder depth and norm-pix
# with --cfg-options-style overrides and scales max_iters to its time budget.
_base_ = ['./_runtime.py']

fmnist_mean = [72.94, 72.94, 72.94]
fmnist_std = [90.0, 90.0, 90.0]
arch = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256)

model = dict(
    type='MaskedAutoencoder',
    data_preprocessor=dict(
        type='mae_mm.MAEDataPreprocessor', mean=fmnist_mean, std=fmnist_std,
        to_rgb=False),
    backbone=dict(type='MaskedViT', arch=arch, img_size=32, patch_size=4, mask_ratio=0.75,
                  mask_strategy='random'),
    neck=dict(type='MAEDecoder', decoder_embed_dim=32, decoder_depth=4, decoder_num_heads=2),
    head=dict(type='PixelReconstructionHead', norm_pix=True,
              loss=dict(type='NormalizedPixelLoss', criterion='L2')))

train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='FashionMNIST',
        split='train',
        num_samples=None,
        serialize_data=False,  # no worker processes; saves a full gc per build
        pipeline=[
            dict(type='mmpretrain.RandomResizedCrop', scale=32, crop_ratio_range=(0.2, 1.0),
                 backend='pillow', interpolation='bicubic'),
            dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='mmpretrain.PackInputs'),
        ]))

max_iters = 3000
warmup_iters = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=1e-6,
         by_epoch=False, begin=warmup_iters, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1, save_optimizer=False))
