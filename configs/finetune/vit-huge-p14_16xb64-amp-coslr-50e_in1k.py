# MAE end-to-end fine-tuning of ViT-H/14 on ImageNet-1k (paper: 86.9 top-1 from the 1600-epoch
# pretraining): as ViT-L (50 epochs, lr 4e-3 at batch 1024, layer decay 0.75) with drop path
# 0.3; global batch 1024 as 16 GPUs x 64.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=... tools/dist_train.sh \
#       configs/finetune/vit-huge-p14_16xb64-amp-coslr-50e_in1k.py 8
_base_ = ['./vit-large-p16_8xb128-amp-coslr-50e_in1k.py']

model = dict(
    backbone=dict(
        arch='h',
        patch_size=14,
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='work_dirs/mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k/'
                      'epoch_1600.pth')),
    head=dict(in_channels=1280))

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader
