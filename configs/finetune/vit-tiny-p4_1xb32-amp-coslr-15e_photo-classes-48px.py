# CPU toy run of higher-resolution fine-tuning: the toy fine-tuning at 48 px from the 32-px
# quick-start checkpoint; its 8 x 8 position grid is resized to 12 x 12 (bicubic, cls kept) on
# loading, as the ViT-H/14 448-px config does with the 224 checkpoint (16 x 16 -> 32 x 32).
#   python tools/train.py configs/finetune/vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-48px.py
_base_ = ['./vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-32px.py']

img_size = 48
model = dict(backbone=dict(img_size=img_size))
train_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.RandomResizedCrop', scale=img_size, backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    {{_base_.rand_augment}},
    {{_base_.random_erasing}},
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.ResizeEdge', scale=55, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=img_size),
    dict(type='mmpretrain.PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
