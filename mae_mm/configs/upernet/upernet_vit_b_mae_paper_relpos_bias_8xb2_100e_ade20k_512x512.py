# UperNet with a ViT-B/16 backbone from a MAE checkpoint: the MAE paper's segmentation transfer
# protocol (BEiT's zero-initialised per-head relative position bias, 100 epochs of ADE20K at
# batch 16 = 126,313 iterations, 512 x 512 crops). Pure-Python twin of
# projects/upernet/configs/upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-512x512.py, whose
# header gives the reasons for every value. In a child config:
#   with read_base():
#       from mae_mm.configs.upernet.upernet_vit_b_mae_paper_relpos_bias_8xb2_100e_ade20k_512x512 import *
#   model.backbone.init_cfg.checkpoint = 'path/to/mae_checkpoint.pth'
from mmengine.config import read_base
from mmengine.optim import LinearLR, PolyLR

from mae_mm.models import MaskedViT

with read_base():
    from .upernet_vit_b_8xb2_160k_ade20k_512x512 import *

# The MAE checkpoint (mae-mm, official MAE, timm or mmpretrain format).
pretrained = 'work_dirs/mae_vit-b_1600e/epoch_1600.pth'

model.backbone = dict(
    type=MaskedViT,
    arch='b',
    img_size=(512, 512),
    patch_size=16,
    mask_ratio=0.0,  # transfer: every patch, no masking
    drop_path_rate=0.1,
    rel_pos_bias='beit',
    pos_embed_trainable=True,
    final_norm=False,
    out_type='featmap',
    out_indices=(3, 5, 7, 11),
    init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.'))

# 100 epochs x 20,210 images / 16 per iteration, rounded up.
max_iters = 126313
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type=PolyLR, eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
train_cfg.update(max_iters=max_iters)
