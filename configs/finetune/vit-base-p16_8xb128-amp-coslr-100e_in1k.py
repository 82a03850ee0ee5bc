# MAE end-to-end fine-tuning of ViT-B/16 on ImageNet-1k (paper: 83.6 top-1 from the 1600-epoch
# pretraining): 100 epochs, global batch 1024 (8 GPUs x 128), AdamW lr 2e-3, layer decay 0.65,
# drop path 0.1, wd 0.05, 5 warm-up epochs, cosine to 1e-6, RandAugment m9-mstd0.5-inc1,
# mixup 0.8, cutmix 1.0, label smoothing 0.1, random erasing 0.25, bf16 autocast, no clipping.
#
#   tools/dist_train.sh configs/finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py 8
#   # from an official MAE file, one field changed:
#   tools/dist_train.sh configs/finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=mae_pretrain_vit_base.pth
_base_ = [
    '../_base_/models/vit-base-p16_cls-finetune.py',
    '../_base_/datasets/imagenet_cls_finetune.py',
    '../_base_/schedules/adamw_layer-decay_coslr_finetune.py',
    '../_base_/default_runtime.py',
]

default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_best='auto'))
