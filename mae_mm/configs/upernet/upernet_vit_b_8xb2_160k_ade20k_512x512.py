# UperNet with a ViT-B/16 backbone initialised from a MAE checkpoint, ADE20K 512 x 512, 160k
# iterations of 16 images (8 processes x 2), AdamW lr 1e-4 wd 0.05, layer decay 0.65, drop path
# 0.1, linear warm-up 1,500 iterations then poly: mmseg's configs/mae recipe with ViTDet's
# decomposed relative position (an alternative, not the MAE paper's BEiT relative position bias:
# projects/upernet/configs/upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-512x512.py).
# Pure-Python twin of projects/upernet/configs/upernet_vit-b_8xb2-160k_ade20k-512x512.py (which
# inherits mmseg's configs/mae recipe; that chain's content is in ../_base_/mmseg/ and below).
# Default scope 'mmseg'. In a child config:
#   with read_base():
#       from mae_mm.configs.upernet.upernet_vit_b_8xb2_160k_ade20k_512x512 import *
#   model.backbone.init_cfg.checkpoint = 'path/to/mae_checkpoint.pth'
from mmengine.config import read_base
from mmengine.optim import LinearLR, PolyLR
from mmseg.models import EncoderDecoder, SegDataPreProcessor
from mmseg.models.decode_heads import FCNHead, UPerHead
from mmseg.models.losses import CrossEntropyLoss
from mmseg.models.necks import Feature2Pyramid
from torch.optim import AdamW

from mae_mm.engine import ExactResumeHook, MAERunner
from mae_mm.engine.optimizers import (LayerDecayOptimWrapperConstructor,
                                      MixedPrecisionOptimWrapper)
from mae_mm.models import ViTDetBackbone

with read_base():
    from .._base_.mmseg.ade20k import *
    from .._base_.mmseg.default_runtime import *
    from .._base_.mmseg.schedule_160k import *

# mae-mm's runner (opt-in; build it with mae_mm.engine.build_runner(cfg)).
runner_type = MAERunner
# Resume continues with the same random streams and data position as the uninterrupted run.
custom_hooks = [dict(type=ExactResumeHook)]

# The MAE checkpoint (mae-mm, official MAE, timm or mmpretrain format). A child config changes
# model.backbone.init_cfg.checkpoint (this variable is read here, not by the child).
pretrained = 'work_dirs/mae_vit-b_1600e/epoch_1600.pth'

# mmseg's _base_/models/upernet_mae.py and mae/mae-base_upernet recipe, with mae-mm's backbone.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type=SegDataPreProcessor,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type=EncoderDecoder,
    data_preprocessor=data_preprocessor,
    pretrained=None,  # mmseg would hand it to the backbone; mae-mm loads through init_cfg
    backbone=dict(
        type=ViTDetBackbone,
        arch='b',
        img_size=(512, 512),
        patch_size=16,
        drop_path_rate=0.1,
        window_size=0,  # global attention in every block
        use_rel_pos=True,
        out_indices=(3, 5, 7, 11),
        with_cp=False,  # True trades a second forward pass for activation memory
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    # mmseg's Feature2Pyramid: strides 4, 8, 16, 32 from the four stride-16 maps.
    neck=dict(type=Feature2Pyramid, embed_dim=768, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(
        type=UPerHead,
        in_channels=[768, 768, 768, 768],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=768,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type=FCNHead,
        in_channels=768,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type=CrossEntropyLoss, use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

optim_wrapper = dict(
    # fp16 with dynamic loss scaling on GPUs, as the mmseg recipe's AMP; fp32 on CPU
    # (logged), as mmseg runs there.
    type=MixedPrecisionOptimWrapper,
    loss_scale='dynamic',
    cpu_dtype=None,
    constructor=LayerDecayOptimWrapperConstructor,
    # lr x 0.65 ** (num_layers + 1 - depth); num_layers is read from the backbone.
    # Weight decay as BEiT's/mmseg's: none on 1-D parameters and biases only; cls_token,
    # pos_embed and the relative-position tables decay.
    paramwise_cfg=dict(layer_decay_rate=0.65, decay_rule='beit_mmseg'),
    optimizer=dict(type=AdamW, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type=PolyLR, eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False)
]
# mmcv-1.x leftover of the mmseg recipe, read by nothing in mmengine; the wrapper above does AMP.
fp16 = None

# 8 GPUs x 2 images
train_dataloader.update(batch_size=2)
val_dataloader.update(batch_size=1)
test_dataloader = val_dataloader
