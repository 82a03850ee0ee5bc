# MAE end-to-end fine-tuning of ViT-L/16 on ImageNet-1k (paper: 85.9 top-1 from the 1600-epoch
# pretraining): as ViT-B but 50 epochs, lr 4e-3 at batch 1024 (blr 1e-3), layer decay 0.75,
# drop path 0.2.
#
#   tools/dist_train.sh configs/finetune/vit-large-p16_8xb128-amp-coslr-50e_in1k.py 8
_base_ = ['./vit-base-p16_8xb128-amp-coslr-100e_in1k.py']

model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='work_dirs/mae_vit-large-p16_8xb512-amp-coslr-1600e_in1k/'
                      'epoch_1600.pth')),
    head=dict(in_channels=1024))

lr = 4e-3
min_lr = 1e-6
warmup_epochs = 5
max_epochs = 50
optim_wrapper = dict(optimizer=dict(lr=lr), paramwise_cfg=dict(layer_decay_rate=0.75))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min_ratio=min_lr / lr,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs)
