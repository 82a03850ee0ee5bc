# CPU quick start: MAE on 32 px crops of the photographs bundled with scikit-image, a few
# minutes on 2 CPU cores. `python tools/quickstart.py` writes the image folder, trains with this
# config and draws a reconstruction figure.
#
# The target is the unnormalised pixels (norm_pix=False), as for the official visualisation
# checkpoints (mae_visualize_*.pth), so the figure shows the model's prediction alone. The
# recipes' per-patch normalised target (norm_pix=True) predicts each hidden patch up to its mean
# and std, which a figure can only fill in from the hidden patches themselves.
_base_ = [
    '../_base_/models/mae_vit-base-p16.py',
    '../_base_/datasets/imagenet_mae.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=192, num_layers=6, num_heads=3, feedforward_channels=768),
        img_size=32,
        patch_size=4),
    neck=dict(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    head=dict(norm_pix=False))

train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    pin_memory=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root='data/quickstart',
        data_prefix='',
        pipeline=[
            dict(type='FastRandomResizedCrop', scale=32, crop_ratio_range=(0.2, 1.0),
                 interpolation='bicubic'),
            dict(type='mmpretrain.RandomFlip', prob=0.5),
            dict(type='mmpretrain.PackInputs'),
        ]))

max_iters = 1000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05),
    # mmengine's constructor; the fixed sin-cos position tables (frozen) reported in one line
    constructor='FrozenAwareOptimWrapperConstructor',
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            'pos_embed': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_iters - 100, by_epoch=False, begin=100,
         end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
