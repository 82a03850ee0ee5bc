# UperNet with a ViT-B/16 backbone initialised from a MAE checkpoint, ADE20K 512 x 512, 160k
# iterations of 16 images (8 processes x 2), AdamW lr 1e-4 wd 0.05, layer decay 0.65, drop path
# 0.1, linear warm-up 1,500 iterations then poly: mmseg's configs/mae recipe, with ViTDet's
# decomposed relative position in global attention instead of the MAE paper's BEiT relative
# position bias: an alternative, not the paper's protocol (that is
# upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-512x512.py). Model, data, schedule and
# runtime come from that mmseg config (default scope 'mmseg'); only the backbone and the
# optimizer are mae-mm's ('mae_mm.' prefix).
_base_ = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'
# Registers mae-mm's modules (reached with the 'mae_mm.' prefix from this scope).
custom_imports = dict(imports=['mae_mm.models', 'mae_mm.engine'], allow_failed_imports=False)
# mae-mm's runner (opt-in): atomic checkpoint writes, auto-resume from the newest complete
# checkpoint, safe loading on torch >= 2.6, grouped checkpoint key report. Delete the line for
# mmengine's stock Runner; mae-mm's modules work with either.
runner_type = 'mae_mm.MAERunner'
# Resume continues with the same random streams and data position as the uninterrupted run.
custom_hooks = [dict(type='mae_mm.ExactResumeHook')]

# The one line to change: the MAE checkpoint. This is where
# `tools/train.py configs/mae_vit-b_1600e.py` writes its last one; official MAE
# (mae_pretrain_vit_base.pth), timm and mmpretrain MAE files load as they are.
pretrained = 'work_dirs/mae_vit-b_1600e/epoch_1600.pth'

model = dict(
    pretrained=None,  # mmseg would hand it to the backbone; mae-mm loads through init_cfg
    backbone=dict(
        _delete_=True,
        type='mae_mm.ViTDetBackbone',
        arch='b',
        img_size=(512, 512),
        patch_size=16,
        drop_path_rate=0.1,
        window_size=0,  # global attention in every block
        use_rel_pos=True,
        out_indices=(3, 5, 7, 11),
        with_cp=False,  # True trades a second forward pass for activation memory
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    # mmseg's Feature2Pyramid (inherited): strides 4, 8, 16, 32 from the four stride-16 maps.
    neck=dict(embed_dim=768, rescales=[4, 2, 1, 0.5]))

optim_wrapper = dict(
    _delete_=True,
    # fp16 with dynamic loss scaling on GPUs, as the mmseg recipe's AMP; fp32 on CPU
    # (logged), as mmseg runs there.
    type='mae_mm.MixedPrecisionOptimWrapper',
    loss_scale='dynamic',
    cpu_dtype=None,
    constructor='mae_mm.LayerDecayOptimWrapperConstructor',
    # lr x 0.65 ** (num_layers + 1 - depth); num_layers is read from the backbone.
    # Weight decay as BEiT's/mmseg's: none on 1-D parameters and biases only; cls_token,
    # pos_embed and the relative-position tables decay.
    paramwise_cfg=dict(layer_decay_rate=0.65, decay_rule='beit_mmseg'),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
# mmcv-1.x leftover of the mmseg base, read by nothing in mmengine; the wrapper above does AMP.
fp16 = None
