# MAE end-to-end fine-tuning classifier, ViT-B/16 (official models_vit.py with --global_pool);
# twin of configs/_base_/models/vit-base-p16_cls-finetune.py. The encoder starts from a mae-mm
# pretraining checkpoint (an official MAE, timm or mmpretrain file loads as it is): change
# model.backbone.init_cfg.checkpoint.
from mmpretrain.models import (ClsDataPreprocessor, CutMix, ImageClassifier, LabelSmoothLoss,
                               LinearClsHead, Mixup)

from mae_mm.models import MaskedViT

model = dict(
    type=ImageClassifier,
    data_preprocessor=dict(
        type=ClsDataPreprocessor,
        num_classes=1000,  # keep equal to head.num_classes (mixup/cutmix one-hot targets)
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type=MaskedViT,
        arch='b',
        img_size=224,
        patch_size=16,
        mask_ratio=0.0,
        out_type='avg_featmap',
        final_norm=False,
        drop_path_rate=0.1,
        pos_embed_trainable=True,
        # init_cfg types stay strings: mae-mm's backbones recognise type='Pretrained'.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k/epoch_1600.pth',
            prefix='backbone.')),
    neck=None,
    head=dict(
        type=LinearClsHead,
        num_classes=1000,
        in_channels=768,
        loss=dict(type=LabelSmoothLoss, label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)]),
    train_cfg=dict(augments=[dict(type=Mixup, alpha=0.8), dict(type=CutMix, alpha=1.0)]))
