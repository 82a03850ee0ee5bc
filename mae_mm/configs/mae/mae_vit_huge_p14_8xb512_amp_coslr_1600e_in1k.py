# MAE pretraining, ViT-H/14, 1600 epochs (the paper's recipe), global batch 4096 = 8 GPUs x 512.
# Pure-Python twin of configs/mae/mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k.py, for
# inheritance from an installed mae-mm:
#   with read_base():
#       from mae_mm.configs.mae.mae_vit_huge_p14_8xb512_amp_coslr_1600e_in1k import *
from mmengine.config import read_base
from mmengine.hooks import CheckpointHook

with read_base():
    from .._base_.datasets.imagenet_mae import *
    from .._base_.default_runtime import *
    from .._base_.models.mae_vit_base_p16 import *
    from .._base_.schedules.adamw_coslr_pretrain import *

model.update(backbone=dict(arch='h', patch_size=14))
train_dataloader.update(batch_size=512)

# A multi-day run: checkpoint every epoch and resume automatically from the latest one.
default_hooks.update(checkpoint=dict(type=CheckpointHook, interval=1, max_keep_ckpts=3))
resume = True
