# UperNet with ViT-L/16 from a MAE checkpoint: the ViT-B decomposed-relative-position recipe
# (upernet_vit-b_8xb2-160k_ade20k-512x512.py: ViTDet's relative position, mmseg's 160k
# iterations; not the MAE paper's protocol) with the ViT-L widths, features of blocks 7/11/15/23
# and a 1024-channel UperHead, as mmseg's BEiT-L; the hyper-parameters below are argued, not
# published, and this target is unvalidated until someone runs it (projects/upernet/README.md).
# - Layer decay 0.8: no MAE ViT-L ADE20K recipe is published. ViT-B's 0.65 over 24 blocks would
#   scale the patch embedding's lr by 0.65^25 ~ 2e-5 (nearly frozen); 0.8^25 ~ 3.8e-3 keeps it
#   where ViT-B's 0.65^13 ~ 3.7e-3 puts it, between MAE's ViT-L ImageNet fine-tuning (0.75) and
#   detectron2's ViTDet-L (0.8); BEiT-L/mmseg's 0.95 is for intermediate-fine-tuned weights.
# - Drop path 0.2: MAE's ViT-L fine-tuning and BEiT-L/mmseg's segmentation.
_base_ = ['./upernet_vit-b_8xb2-160k_ade20k-512x512.py']

# The one line to change: where `tools/train.py configs/mae_vit-l_1600e.py` writes its last
# checkpoint (or an official mae_pretrain_vit_large.pth).
pretrained = 'work_dirs/mae_vit-l_1600e/epoch_1600.pth'

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.2,
        out_indices=(7, 11, 15, 23),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(embed_dim=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))

optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
