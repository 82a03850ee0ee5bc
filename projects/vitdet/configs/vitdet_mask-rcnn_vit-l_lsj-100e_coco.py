# ViTDet Mask R-CNN with ViT-L/16 from a MAE checkpoint: the ViT-B recipe with the ViT-L changes
# of detectron2's mask_rcnn_vitdet_l_100ep.py (drop path 0.4, global blocks 5/11/17/23, layer
# decay 0.8, over the 24 blocks).
_base_ = ['./vitdet_mask-rcnn_vit-b_lsj-100e_coco.py']

# The one line to change: where `tools/train.py configs/mae_vit-l_1600e.py` writes its last
# checkpoint (or an official mae_pretrain_vit_large.pth).
pretrained = 'work_dirs/mae_vit-l_1600e/epoch_1600.pth'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.4,
        global_attn_indexes=(5, 11, 17, 23),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
