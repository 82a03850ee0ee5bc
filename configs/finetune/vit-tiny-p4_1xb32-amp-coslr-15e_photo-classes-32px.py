# CPU toy run of the fine-tuning protocol: the real ViT-B recipe (layer decay 0.65, drop path,
# RandAugment, mixup/cutmix, label smoothing, random erasing, bf16 autocast) on the
# quick-start encoder (6 blocks, 192 wide, patch 4, 32 px) and a 4-class folder of real photo
# crops, data/photo_classes/{train,val}/<photo>/*.jpg (train crops from the left 60% of each
# scikit-image photo, val crops from the right 40%). Minutes on 2 CPU cores:
#   python tools/quickstart.py   # MAE pretraining -> work_dirs/quickstart/iter_1000.pth
#   python -c "from tests.test_evaluation._labelled_folder import write_photo_classes as w; w()"
#   python tools/train.py configs/finetune/vit-tiny-p4_1xb32-amp-coslr-15e_photo-classes-32px.py
_base_ = ['./vit-base-p16_8xb128-amp-coslr-100e_in1k.py']

num_classes = 4
model = dict(
    data_preprocessor=dict(num_classes=num_classes),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=192, num_layers=6, num_heads=3,
                  feedforward_channels=768),
        img_size=32,
        patch_size=4,
        init_cfg=dict(checkpoint='work_dirs/quickstart/iter_1000.pth')),
    head=dict(num_classes=num_classes, in_channels=192))

data_root = 'data/photo_classes'
train_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.RandomResizedCrop', scale=32, backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    {{_base_.rand_augment}},
    {{_base_.random_erasing}},
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageSafe'),
    dict(type='mmpretrain.ResizeEdge', scale=37, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='mmpretrain.CenterCrop', crop_size=32),
    dict(type='mmpretrain.PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=2, pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64, num_workers=2, pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator

# Toy choices: lr 1e-3 at batch 32 (the paper's 2e-3 is for batch 1024), 15 epochs.
lr = 1e-3
min_lr = 1e-6
warmup_epochs = 2
max_epochs = 15
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, eta_min_ratio=min_lr / lr,
         by_epoch=True, begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
auto_scale_lr = dict(base_batch_size=32)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1,
                    save_best=None))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
