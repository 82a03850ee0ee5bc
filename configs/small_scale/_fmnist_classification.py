# Shared parts of the small-scale study's classification configs (fine-tune, from scratch,
# linear probe): the classifier around the MAE encoder, Fashion-MNIST from its Debian package, upsampled 28 -> 32 px, the test split
# as the validation set, top-1 accuracy, iteration-based schedule evaluated once at the end.
# tools/benchmarks/small_scale_study.py overrides the iteration counts, label subset and seed.
_base_ = ['./_runtime.py']

# Fashion-MNIST statistics in 0-255 units (gray replicated to 3 channels by the dataset).
fmnist_mean = [72.94, 72.94, 72.94]
fmnist_std = [90.0, 90.0, 90.0]
arch = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=256)

data_preprocessor = dict(
    type='mmpretrain.ClsDataPreprocessor', mean=fmnist_mean, std=fmnist_std, to_rgb=False,
    num_classes=10)

# The fine-tune and linear configs choose the encoder's output, the neck and the loss.
model = dict(
    type='mmpretrain.ImageClassifier',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MaskedViT', arch=arch, img_size=32, patch_size=4, mask_ratio=0.,
        init_cfg=dict(type='Pretrained', checkpoint='SET_BY_STUDY', prefix='backbone.')),
    head=dict(type='mmpretrain.LinearClsHead', num_classes=10, in_channels=64))

train_pipeline = [
    dict(type='mmpretrain.Resize', scale=32, backend='pillow', interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='mmpretrain.PackInputs'),
]
test_pipeline = [
    dict(type='mmpretrain.Resize', scale=32, backend='pillow', interpolation='bicubic'),
    dict(type='mmpretrain.PackInputs'),
]

train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    # subset_ratio=0.1 gives the 10%-labels setting; the draw is stratified and seeded.
    # serialize_data=False: no worker processes share the list, and serializing it costs a
    # full garbage collection per data set build (seconds, ~30 builds per study).
    dataset=dict(type='FashionMNIST', split='train', subset_ratio=None, seed=0,
                 serialize_data=False, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    # num_samples=None: the whole 10k test split; a number: a stratified, fixed subset.
    dataset=dict(type='FashionMNIST', split='test', num_samples=None, seed=0, test_mode=True,
                 serialize_data=False, pipeline=test_pipeline))
val_evaluator = dict(type='mmpretrain.Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_iters = 2000
warmup_iters = 200
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', T_max=max_iters - warmup_iters, eta_min=1e-6,
         by_epoch=False, begin=warmup_iters, end=max_iters),
]
# No checkpoints (the runtime's default): the study keeps only the measured accuracy.
