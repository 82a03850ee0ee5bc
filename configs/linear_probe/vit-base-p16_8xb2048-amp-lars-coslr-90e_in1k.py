# MAE linear probing of ViT-B/16 on ImageNet-1k (paper: 68.0 top-1 from the 1600-epoch
# pretraining): frozen encoder, cls token, BatchNorm without affine, linear head; LARS lr 6.4
# (0.1 x 16384 / 256), momentum 0.9, no weight decay, 10 warm-up + 80 cosine epochs (90 in all);
# global batch 16384 (8 GPUs x 2048).
#
#   tools/dist_train.sh configs/linear_probe/vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py 8
#   # probe an official MAE file instead, one field changed:
#   ... --cfg-options model.backbone.init_cfg.checkpoint=mae_pretrain_vit_base.pth
_base_ = [
    '../_base_/models/vit-base-p16_cls-linear-probe.py',
    '../_base_/datasets/imagenet_cls_linear-probe.py',
    '../_base_/schedules/lars_coslr_linear-probe.py',
    '../_base_/default_runtime.py',
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))
