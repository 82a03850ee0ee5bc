# ImageNet-1k classification for MAE linear probing (official main_linprobe.py), ImageNet
# folder layout (data/imagenet/{train,val}/<class>/*.JPEG; any labelled folder works). Training:
# random-resized crop (scale 0.08-1, bicubic) and horizontal flip only; evaluation: short side
# 256, centre crop 224.
_base_ = ['./imagenet_cls_finetune.py']

train_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs'),
]

# 8 processes x 2048 = 16384, the official global batch (the frozen encoder stores no
# activations for backward, so large per-GPU batches fit).
train_dataloader = dict(batch_size=2048, drop_last=True, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=256)
test_dataloader = val_dataloader
