# MAE linear probing of ViT-B/16 on ImageNet-1k (paper: 68.0 top-1 from the 1600-epoch
# pretraining): frozen encoder, cls token, BatchNorm without affine, linear head; LARS lr 6.4,
# 90 epochs, global batch 16384 (8 GPUs x 2048). Pure-Python twin of
# configs/linear_probe/vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py.
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook, LoggerHook

with read_base():
    from .._base_.datasets.imagenet_cls_linear_probe import *
    from .._base_.default_runtime import *
    from .._base_.models.vit_base_p16_cls_linear_probe import *
    from .._base_.schedules.lars_coslr_linear_probe import *

default_hooks.update(
    logger=dict(type=LoggerHook, interval=10),
    checkpoint=dict(type=CheckpointHook, interval=1, max_keep_ckpts=3, save_best='auto'))
