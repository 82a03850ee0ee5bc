# MAE linear probing, ViT-B/16 (official main_linprobe.py); twin of
# configs/_base_/models/vit-base-p16_cls-linear-probe.py: the fine-tuning classifier with the
# encoder frozen, its cls token after the final norm through BatchNorm1d without affine into a
# linear head (trunc-normal std 0.01); plain cross-entropy, no mixup/cutmix.
from mmengine.config import read_base
from mmpretrain.models import ClsBatchNormNeck, CrossEntropyLoss

with read_base():
    from .vit_base_p16_cls_finetune import *

model.backbone.update(
    out_type='cls_token',
    final_norm=True,
    drop_path_rate=0.0,
    pos_embed_trainable=False,
    frozen_stages=12)  # = num_layers: the whole encoder
# Assignment replaces a sub-dict (the text config's `_delete_=True`).
model.neck = dict(type=ClsBatchNormNeck, input_features=768, affine=False, eps=1e-6)
model.head.loss = dict(type=CrossEntropyLoss)
model.head.init_cfg = [dict(type='TruncNormal', layer='Linear', std=0.01)]
model.train_cfg = None
