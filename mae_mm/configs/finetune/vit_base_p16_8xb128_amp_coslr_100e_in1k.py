# MAE end-to-end fine-tuning of ViT-B/16 on ImageNet-1k (paper: 83.6 top-1 from the 1600-epoch
# pretraining): 100 epochs, global batch 1024 (8 GPUs x 128). Pure-Python twin of
# configs/finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py; from an official MAE file, one
# field changed in a child config:
#   model.backbone.init_cfg.checkpoint = 'mae_pretrain_vit_base.pth'
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook

with read_base():
    from .._base_.datasets.imagenet_cls_finetune import *
    from .._base_.default_runtime import *
    from .._base_.models.vit_base_p16_cls_finetune import *
    from .._base_.schedules.adamw_layer_decay_coslr_finetune import *

default_hooks.update(checkpoint=dict(type=CheckpointHook, interval=1, max_keep_ckpts=3,
                                     save_best='auto'))
