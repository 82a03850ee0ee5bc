# MAE end-to-end fine-tuning classifier, ViT-B/16 (He et al. 2021, Table 9; official
# models_vit.py with --global_pool): the pretrained encoder runs unmasked, the patch tokens are
# average-pooled and normalised by fc_norm (final norm not applied), then a linear head
# initialised with trunc-normal std 2e-5. Label smoothing 0.1; mixup 0.8 / cutmix 1.0, one of
# the two per batch. The cls token instead: backbone out_type='cls_token', final_norm=True.
#
# The encoder starts from a mae-mm pretraining checkpoint (keys 'backbone.*'); an official MAE
# file ({'model': ...}), a timm state dict or an mmpretrain checkpoint load as they are: change
# only model.backbone.init_cfg.checkpoint. Keys that do not fit (beyond the expected-missing
# fc_norm) stop the run with the grouped key report; allow_partial=True in init_cfg loads what fits.
model = dict(
    type='mmpretrain.ImageClassifier',
    data_preprocessor=dict(
        type='mmpretrain.ClsDataPreprocessor',
        num_classes=1000,  # keep equal to head.num_classes (mixup/cutmix one-hot targets)
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='MaskedViT',
        arch='b',
        img_size=224,
        patch_size=16,
        mask_ratio=0.0,
        out_type='avg_featmap',
        final_norm=False,
        drop_path_rate=0.1,
        pos_embed_trainable=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k/epoch_1600.pth',
            prefix='backbone.')),
    neck=None,
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(type='mmpretrain.LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=2e-5)]),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
