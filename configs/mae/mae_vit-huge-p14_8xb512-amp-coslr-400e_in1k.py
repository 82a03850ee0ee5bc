# MAE pretraining, ViT-H/14, 400 epochs, global batch 4096 (8 GPUs x 512; other layouts:
# keep the global batch with gradient accumulation, or use --auto-scale-lr).
_base_ = [
    '../_base_/models/mae_vit-base-p16.py',
    '../_base_/datasets/imagenet_mae.py',
    '../_base_/schedules/adamw_coslr_pretrain.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(arch='h', patch_size=14))

train_dataloader = dict(batch_size=512)

max_epochs = 400
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=40,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 40, eta_min=0.0, by_epoch=True,
         begin=40, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)

# A multi-day run: checkpoint every epoch and resume automatically from the latest one.
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
resume = True
