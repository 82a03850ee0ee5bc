# MAE linear probing of ViT-L/16 on ImageNet-1k (paper: 75.8 top-1): the ViT-B recipe on the
# ViT-L encoder (24 frozen blocks), 90 epochs as mmpretrain's benchmark config. The official
# README probes ViT-L/H for 50 epochs (10 warm-up + 40 cosine: change train_cfg.max_epochs and
# the cosine scheduler's T_max/end).
#
#   tools/dist_train.sh configs/linear_probe/vit-large-p16_8xb2048-amp-lars-coslr-90e_in1k.py 8
_base_ = ['./vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py']

model = dict(
    backbone=dict(
        arch='l',
        frozen_stages=24,
        init_cfg=dict(checkpoint='work_dirs/mae_vit-large-p16_8xb512-amp-coslr-1600e_in1k/'
                      'epoch_1600.pth')),
    neck=dict(input_features=1024),
    head=dict(in_channels=1024))
