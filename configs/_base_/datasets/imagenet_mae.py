# Unlabelled pretraining images. Default: ImageNet's folder layout under data/imagenet/train.
# Any folder of images works by changing ``data_root`` (and ``data_prefix``), e.g.
#   --cfg-options train_dataloader.dataset.data_root=/path/to/images train_dataloader.dataset.data_prefix=''
data_root = 'data/imagenet'

train_pipeline = [
    # LoadImageSafe + mmpretrain's RandomResizedCrop(backend='pillow'), decoding only the crop:
    # mmpretrain's pixels exactly. Faster, not the same pixels (figures in docs/benchmarks.md,
    # "Data pipeline"): backend='cv2' (OpenCV's bicubic, mmpretrain's backend='cv2', not
    # antialiased) or, for photos over twice the output size, draft=True.
    dict(type='FastRandomResizedCrop', scale=224, crop_ratio_range=(0.2, 1.0),
         interpolation='bicubic'),
    dict(type='mmpretrain.RandomFlip', prob=0.5),
    dict(type='mmpretrain.PackInputs'),
]

train_dataloader = dict(
    batch_size=512,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageFolder',
        data_root=data_root,
        data_prefix='train',
        with_label=False,
        pipeline=train_pipeline))
