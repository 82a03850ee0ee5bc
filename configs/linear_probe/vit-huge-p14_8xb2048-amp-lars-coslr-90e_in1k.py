# MAE linear probing of ViT-H/14 on ImageNet-1k (paper: 76.6 top-1): the ViT-B recipe on the
# ViT-H/14 encoder (32 frozen blocks).
#
#   tools/dist_train.sh configs/linear_probe/vit-huge-p14_8xb2048-amp-lars-coslr-90e_in1k.py 8
_base_ = ['./vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py']

model = dict(
    backbone=dict(
        arch='h',
        patch_size=14,
        frozen_stages=32,
        init_cfg=dict(checkpoint='work_dirs/mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k/'
                      'epoch_1600.pth')),
    neck=dict(input_features=1280),
    head=dict(in_channels=1280))
