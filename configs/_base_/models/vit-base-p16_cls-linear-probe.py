# MAE linear probing, ViT-B/16 (He et al. 2021, Table 10; official main_linprobe.py): the
# classifier of fine-tuning with the pretrained encoder frozen (frozen_stages = all blocks: no
# gradient, kept in eval mode) and its cls token after the final norm going through
# BatchNorm1d without affine (eps 1e-6; batch statistics in training, running statistics in
# evaluation) into a linear head initialised with trunc-normal std 0.01; plain cross-entropy,
# no mixup/cutmix.
#
# Change only model.backbone.init_cfg.checkpoint to probe another checkpoint (mae-mm, official
# MAE, timm or mmpretrain format).
_base_ = ['./vit-base-p16_cls-finetune.py']

model = dict(
    backbone=dict(
        out_type='cls_token',
        final_norm=True,
        drop_path_rate=0.0,
        pos_embed_trainable=False,
        frozen_stages=12),  # = num_layers: the whole encoder
    neck=dict(_delete_=True, type='mmpretrain.ClsBatchNormNeck', input_features=768,
              affine=False, eps=1e-6),
    head=dict(
        loss=dict(_delete_=True, type='mmpretrain.CrossEntropyLoss'),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.01)]),
    train_cfg=None)
