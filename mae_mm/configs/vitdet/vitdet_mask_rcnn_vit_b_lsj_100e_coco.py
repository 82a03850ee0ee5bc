# ViTDet (Li et al., 2022): Mask R-CNN with a plain ViT-B/16 backbone initialised from a MAE
# checkpoint, simple feature pyramid, LSJ at 1024 px, 100 epochs (184,375 iterations of 64
# images), AdamW lr 1e-4 wd 0.1, layer decay 0.7, drop path 0.1, window attention (14) with global
# blocks 2/5/8/11 and relative position. Pure-Python twin of
# projects/vitdet/configs/vitdet_mask-rcnn_vit-b_lsj-100e_coco.py (which inherits mmdet's text
# configs; their content is in ../_base_/mmdet/ here). Default scope 'mmdet'. In a child config:
#   with read_base():
#       from mae_mm.configs.vitdet.vitdet_mask_rcnn_vit_b_lsj_100e_coco import *
#   model.backbone.init_cfg.checkpoint = 'path/to/mae_checkpoint.pth'
from mmcv.transforms import LoadImageFromFile
from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs, Resize
from mmdet.models import MaskRCNN
from mmdet.models.data_preprocessors import BatchFixedSizePad, DetDataPreprocessor
from mmdet.models.dense_heads import RPNHead
from mmdet.models.losses import CrossEntropyLoss, L1Loss
from mmdet.models.roi_heads import (FCNMaskHead, Shared4Conv1FCBBoxHead, SingleRoIExtractor,
                                    StandardRoIHead)
from mmdet.models.task_modules import (AnchorGenerator, DeltaXYWHBBoxCoder, MaxIoUAssigner,
                                       RandomSampler)
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import LinearLR, MultiStepLR
from mmengine.runner import IterBasedTrainLoop, LogProcessor
from torch.optim import AdamW

from mae_mm.engine import ExactResumeHook, MAERunner
from mae_mm.engine.optimizers import (LayerDecayOptimWrapperConstructor,
                                      MixedPrecisionOptimWrapper)
from mae_mm.models import SimpleFeaturePyramid, ViTDetBackbone

with read_base():
    from .._base_.mmdet.lsj_100e_coco_instance import *

# mae-mm's runner (opt-in; build it with mae_mm.engine.build_runner(cfg)): atomic checkpoint
# writes, auto-resume from the newest complete checkpoint, safe loading on torch >= 2.6.
runner_type = MAERunner
# Resume continues with the same random streams and data position as the uninterrupted run.
custom_hooks = [dict(type=ExactResumeHook)]

# The MAE checkpoint (mae-mm, official MAE, timm or mmpretrain format). A child config changes
# model.backbone.init_cfg.checkpoint (this variable is read here, not by the child).
pretrained = 'work_dirs/mae_vit-b_1600e/epoch_1600.pth'

image_size = (1024, 1024)
# Channel LayerNorm in the RPN/RoI heads, as ViTDet (mmpretrain's LN2d, by its registry name).
head_norm_cfg = dict(type='mmpretrain.LN2d', requires_grad=True)

# mmdet's _base_/models/mask-rcnn_r50_fpn.py with ViTDet's backbone, neck and heads.
model = dict(
    type=MaskRCNN,
    data_preprocessor=dict(
        type=DetDataPreprocessor,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        # detectron2's square_pad=1024: every batch, in training and at test, is zero-padded
        # (after normalisation) to 1024 x 1024, and the backbone, the pyramid and the heads run
        # on that canvas; img_shape stays the image's, to which boxes are clipped. Images are at
        # most 1024 px (LSJ crops, test resize), so a multiple of 1024 is the square
        # (BatchFixedSizePad, training only in mmdet, pads the masks).
        pad_size_divisor=image_size[0],
        batch_augments=[dict(type=BatchFixedSizePad, size=image_size, pad_mask=True)]),
    backbone=dict(
        type=ViTDetBackbone,
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
        type=SimpleFeaturePyramid,
        in_channels=768,
        out_channels=256,
        scale_factors=(4.0, 2.0, 1.0, 0.5),
        num_outs=5),
    rpn_head=dict(
        type=RPNHead,
        in_channels=256,
        feat_channels=256,
        num_convs=2,
        anchor_generator=dict(
            type=AnchorGenerator, scales=[8], ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type=DeltaXYWHBBoxCoder, target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type=CrossEntropyLoss, use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type=L1Loss, loss_weight=1.0)),
    roi_head=dict(
        type=StandardRoIHead,
        bbox_roi_extractor=dict(
            type=SingleRoIExtractor,
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type=Shared4Conv1FCBBoxHead,
            conv_out_channels=256,
            norm_cfg=head_norm_cfg,
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(
                type=DeltaXYWHBBoxCoder, target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type=L1Loss, loss_weight=1.0)),
        mask_roi_extractor=dict(
            type=SingleRoIExtractor,
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type=FCNMaskHead,
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            norm_cfg=head_norm_cfg,
            loss_mask=dict(type=CrossEntropyLoss, use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type=MaxIoUAssigner, pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(
                type=RandomSampler, num=256, pos_fraction=0.5, neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            assigner=dict(
                type=MaxIoUAssigner, pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(
                type=RandomSampler, num=512, pos_fraction=0.25, neg_pos_ub=-1,
                add_gt_as_proposals=True),
            mask_size=28,
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100,
            mask_thr_binary=0.5)))

# Test at 1024 on the long side (the data preprocessor pads to 1024 x 1024, see above).
test_pipeline = [
    dict(type=LoadImageFromFile, backend_args=None),
    dict(type=Resize, scale=image_size, keep_ratio=True),
    dict(type=LoadAnnotations, with_bbox=True, with_mask=True),
    dict(type=PackDetInputs,
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Global batch 64: 16 processes x 4 images (or 8 x 8); other layouts: --auto-scale-lr.
train_dataloader.update(batch_size=4, num_workers=8)
val_dataloader.dataset.pipeline = test_pipeline
test_dataloader = val_dataloader

optim_wrapper = dict(
    # fp16 with dynamic loss scaling on GPUs; fp32 on CPU (logged), where mmcv's nms
    # and roi_align have no bf16 kernels.
    type=MixedPrecisionOptimWrapper,
    loss_scale='dynamic',
    cpu_dtype=None,
    constructor=LayerDecayOptimWrapperConstructor,
    # lr x 0.7 ** (num_layers + 1 - depth); num_layers is read from the backbone.
    # Weight decay as detectron2's recipe (and mmdet's port): none on the backbone's LayerNorms
    # and pos_embed only; biases, rel_pos_h/w, the pyramid's and heads' norms decay.
    paramwise_cfg=dict(layer_decay_rate=0.7, decay_rule='detectron2_vitdet'),
    optimizer=dict(type=AdamW, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))

# 100 epochs = 184,375 iterations x 64 images / 118k images; steps at 88 and 96 epochs.
max_iters = 184375
interval = 5000
param_scheduler = [
    dict(type=LinearLR, start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type=MultiStepLR, by_epoch=False, begin=0, end=max_iters,
         milestones=[163889, 177546], gamma=0.1),
]
train_cfg = dict(
    type=IterBasedTrainLoop,
    max_iters=max_iters,
    val_interval=interval,
    dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
default_hooks.update(
    logger=dict(type=LoggerHook, interval=50),
    checkpoint=dict(type=CheckpointHook, by_epoch=False, save_last=True, interval=interval,
                    max_keep_ckpts=5))
log_processor = dict(type=LogProcessor, window_size=50, by_epoch=False)
auto_scale_lr = dict(base_batch_size=64)
