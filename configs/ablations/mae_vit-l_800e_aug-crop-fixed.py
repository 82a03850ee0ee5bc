# Paper ablation (He et al. 2021, Table 1e: fixed-size random crop), on the ablation setting: ViT-L/16, 800 epochs.
_base_ = ['../mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']

train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomCrop', crop_size=224),
    dict(type='mmpretrain.RandomFlip', prob=0.5),
    dict(type='mmpretrain.PackInputs'),
]))
