# The MAE paper's segmentation protocol at toy scale, for a laptop CPU: the backbone of
# upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-512x512.py (MaskedViT unmasked with
# BEiT's zero-initialised relative position bias) as a ViT-T at 128 px, on the data, heads and
# 100-iteration schedule of upernet_vit-t_labelme-128px_toy-cpu.py (see projects/upernet/README.md
# for the toy pretraining it starts from):
#
#   python tools/train.py \
#       projects/upernet/configs/upernet_vit-t_mae-paper-relpos-bias_labelme-128px_toy-cpu.py
#
# The bias table is built for the 8 x 8 grid of 128 px crops: every crop of the slide test is
# 128 x 128 (the test images are resized to 128 px on the short side).
_base_ = ['./upernet_vit-t_labelme-128px_toy-cpu.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='mae_mm.MaskedViT',
        arch={{_base_.arch}},
        img_size={{_base_.crop_size}},
        patch_size=16,
        mask_ratio=0.0,
        drop_path_rate=0.1,
        rel_pos_bias='beit',
        pos_embed_trainable=True,
        final_norm=False,
        out_type='featmap',
        out_indices=(3, 5, 7, 11),
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pretrained}}, prefix='backbone.')))
