# UperNet with ViT-L/16 from a MAE checkpoint: the ViT-B recipe (same optimizer, layer decay 0.65
# and drop path 0.1, as the MAE paper's segmentation transfer) with the ViT-L widths; features of
# blocks 7/11/15/23 and a 1024-channel UperHead, as mmseg's BEiT-L.
_base_ = ['./upernet_vit-b_8xb2-160k_ade20k-512x512.py']

# The one line to change: where `tools/train.py configs/mae_vit-l_1600e.py` writes its last
# checkpoint (or an official mae_pretrain_vit_large.pth).
pretrained = 'work_dirs/mae_vit-l_1600e/epoch_1600.pth'

model = dict(
    backbone=dict(
        arch='l',
        out_indices=(7, 11, 15, 23),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))
