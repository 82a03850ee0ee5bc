# ImageNet-1k classification for MAE linear probing (official main_linprobe.py); twin of
# configs/_base_/datasets/imagenet_cls_linear-probe.py. Training: random-resized crop (bicubic)
# and horizontal flip only; evaluation as fine-tuning.
from mmcv.transforms import RandomFlip
from mmengine.config import read_base
from mmpretrain.datasets.transforms import PackInputs, RandomResizedCrop

from mae_mm.datasets.transforms import LoadImageSafe

with read_base():
    from .imagenet_cls_finetune import *

train_pipeline = [
    dict(type=LoadImageSafe),
    dict(type=RandomResizedCrop, scale=224, backend='pillow', interpolation='bicubic'),
    dict(type=RandomFlip, prob=0.5, direction='horizontal'),
    dict(type=PackInputs),
]

# 8 processes x 2048 = 16384, the official global batch.
train_dataloader.update(batch_size=2048, drop_last=True)
train_dataloader.dataset.pipeline = train_pipeline
val_dataloader.update(batch_size=256)
test_dataloader = val_dataloader
