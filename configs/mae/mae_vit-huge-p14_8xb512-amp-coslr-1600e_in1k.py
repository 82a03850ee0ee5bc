# MAE pretraining, ViT-H/14, 1600 epochs (the paper's recipe), global batch 4096 = 8 GPUs x 512.
# Other layouts: keep the global batch with optim_wrapper.accumulative_counts, or --auto-scale-lr.
_base_ = [
    '../_base_/models/mae_vit-base-p16.py',
    '../_base_/datasets/imagenet_mae.py',
    '../_base_/schedules/adamw_coslr_pretrain.py',
    '../_base_/default_runtime.py',
]

model = dict(backbone=dict(arch='h', patch_size=14))

train_dataloader = dict(batch_size=512)

# A multi-day run: checkpoint every epoch and resume automatically from the latest one.
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
resume = True
