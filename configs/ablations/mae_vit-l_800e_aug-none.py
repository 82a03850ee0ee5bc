# Paper ablation (He et al. 2021, Table 1e: no augmentation (center crop only)), on the ablation default (mae_vit-l_800e_ablation-default.py:
# ViT-L/16, 800 epochs, decoder 8x512, random-size crop, random 75% masking, unnormalised pixels).
_base_ = ['./mae_vit-l_800e_ablation-default.py']

train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=224),
    dict(type='mmpretrain.PackInputs'),
]))
