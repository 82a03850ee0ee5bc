# ViTDet (Li et al., 2022): Mask R-CNN with a plain ViT-B/16 backbone initialised from a MAE
# checkpoint, simple feature pyramid, LSJ at 1024 px, 100 epochs (184,375 iterations of 64
# images), AdamW lr 1e-4 wd 0.1, layer decay 0.7, drop path 0.1, window attention (14) with global
# blocks 2/5/8/11 and relative position; the recipe of detectron2's mask_rcnn_vitdet_b_100ep.py
# and mmdet's projects/ViTDet. Everything else comes from mmdet's own configs (default scope
# 'mmdet'); the mae-mm modules are reached by their 'mae_mm.' prefix.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]
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

image_size = (1024, 1024)
# Channel LayerNorm in the RPN/RoI heads, as ViTDet (mmpretrain's LN2d, reached by prefix).
head_norm_cfg = dict(type='mmpretrain.LN2d', requires_grad=True)

model = dict(
    # detectron2's square_pad=1024: every batch, in training and at test, is zero-padded (after
    # normalisation) to 1024 x 1024, and the backbone, the pyramid and the heads run on that
    # canvas; img_shape stays the image's, to which boxes are clipped. Images are at most 1024
    # px (LSJ crops, test resize), so padding to a multiple of 1024 is padding to the square
    # (BatchFixedSizePad, training only in mmdet, pads the masks).
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='mae_mm.ViTDetBackbone',
        arch='b',
        img_size=image_size,
        patch_size=16,
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        use_rel_pos=True,
        out_indices=(-1, ),
        # The position table keeps the MAE checkpoint's 14 x 14 grid (224 px) and is
        # interpolated to the 64 x 64 grid in every forward pass, as in ViTDet.
        pretrain_img_size=224,
        # The reference's semantics; mae-mm's departures stay off (projects/vitdet/README.md):
        # mask_padded_keys, pos_embed_resample_at_load, pad_patch_remainder, pad_to_img_size,
        # crop_to_input.
        with_cp=False,  # True trades a second forward pass for activation memory
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(
        _delete_=True,
        type='mae_mm.SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=head_norm_cfg),
        mask_head=dict(norm_cfg=head_norm_cfg)))

# Test at 1024 on the long side (the data preprocessor pads to 1024 x 1024, see above). A Pad
# transform here would make the padding part of `img_shape`, and boxes would be clipped to it.
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Global batch 64: 16 processes x 4 images (or 8 x 8); other layouts: --auto-scale-lr.
train_dataloader = dict(batch_size=4, num_workers=8)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    # fp16 with dynamic loss scaling on GPUs; fp32 on CPU (logged), where mmcv's nms
    # and roi_align have no bf16 kernels.
    type='mae_mm.MixedPrecisionOptimWrapper',
    loss_scale='dynamic',
    cpu_dtype=None,
    constructor='mae_mm.LayerDecayOptimWrapperConstructor',
    # lr x 0.7 ** (num_layers + 1 - depth); num_layers is read from the backbone.
    # Weight decay as detectron2's recipe (and mmdet's port): none on the backbone's LayerNorms
    # and pos_embed only; biases, rel_pos_h/w, the pyramid's and heads' norms decay.
    paramwise_cfg=dict(layer_decay_rate=0.7, decay_rule='detectron2_vitdet'),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))

# 100 epochs = 184,375 iterations x 64 images / 118k images; steps at 88 and 96 epochs.
max_iters = 184375
interval = 5000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[163889, 177546], gamma=0.1),
]
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, interval=interval,
                    max_keep_ckpts=5))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)
