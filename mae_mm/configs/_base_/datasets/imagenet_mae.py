# Unlabelled pretraining images (pure-Python twin of configs/_base_/datasets/imagenet_mae.py).
# Default: ImageNet's folder layout under data/imagenet/train; any folder of images works, e.g.
#   train_dataloader.dataset.update(data_root='/path/to/images', data_prefix='')
from mmcv.transforms import RandomFlip
from mmengine.dataset import DefaultSampler, default_collate
from mmpretrain.datasets.transforms import PackInputs

from mae_mm.datasets import ImageFolder
from mae_mm.datasets.transforms import FastRandomResizedCrop

data_root = 'data/imagenet'

train_pipeline = [
    # LoadImageSafe + mmpretrain's RandomResizedCrop(backend='pillow'), decoding only the crop:
    # mmpretrain's pixels exactly. Faster, not the same pixels (figures in docs/benchmarks.md,
    # "Data pipeline"): backend='cv2' (OpenCV's bicubic, mmpretrain's backend='cv2', not
    # antialiased) or, for photos over twice the output size, draft=True.
    dict(type=FastRandomResizedCrop, scale=224, crop_ratio_range=(0.2, 1.0),
         interpolation='bicubic'),
    dict(type=RandomFlip, prob=0.5),
    dict(type=PackInputs),
]

train_dataloader = dict(
    batch_size=512,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=default_collate),
    dataset=dict(
        type=ImageFolder,
        data_root=data_root,
        data_prefix='train',
        with_label=False,
        pipeline=train_pipeline))
