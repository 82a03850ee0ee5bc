# Paper ablation (He et al. 2021, Table 1e: no augmentation (center crop only)), on the ablation setting: ViT-L/16, 800 epochs.
_base_ = ['../mae/mae_vit-large-p16_8xb512-amp-coslr-800e_in1k.py']

train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=224),
    dict(type='mmpretrain.PackInputs'),
]))
