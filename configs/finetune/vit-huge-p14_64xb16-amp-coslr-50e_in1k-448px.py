# MAE fine-tuning of ViT-H/14 at 448 x 448 (paper: 87.8 top-1, the best ImageNet-1k-only result)
# from a 224-pretrained checkpoint: the 16 x 16 position grid of the checkpoint is resized to
# 32 x 32 (bicubic on the 2-D grid, cls position kept) when it is loaded. Recipe of the 224 ViT-H
# fine-tuning (50 epochs, lr 4e-3 at batch 1024, layer decay 0.75, drop path 0.3); global batch
# 1024 as 64 GPUs x 16. Evaluation: short side 512, centre crop 448.
#
#   NNODES=8 NODE_RANK=... MASTER_ADDR=... tools/dist_train.sh \
#       configs/finetune/vit-huge-p14_64xb16-amp-coslr-50e_in1k-448px.py 8
_base_ = ['./vit-huge-p14_16xb64-amp-coslr-50e_in1k.py']

img_size = 448
model = dict(backbone=dict(img_size=img_size))

train_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.RandomResizedCrop', scale=img_size, backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    {{_base_.rand_augment}},
    {{_base_.random_erasing}},
    dict(type='mmpretrain.PackInputs'),
]
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))

test_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.ResizeEdge', scale=512, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=img_size),
    dict(type='mmpretrain.PackInputs'),
]
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
