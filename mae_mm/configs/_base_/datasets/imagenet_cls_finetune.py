# ImageNet-1k classification for MAE fine-tuning, ImageNet folder layout
# (data/imagenet/{train,val}/<class>/*.JPEG; any labelled folder works: change data_root, and
# num_classes in the model). Twin of configs/_base_/datasets/imagenet_cls_finetune.py: random-
# resized crop (bicubic), flip, RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25; evaluation
# short side 256, centre crop 224.
from mmcv.transforms import CenterCrop, RandomFlip
from mmengine.dataset import DefaultSampler, default_collate
from mmpretrain.datasets.transforms import (PackInputs, RandAugment, RandomErasing,
                                            RandomResizedCrop, ResizeEdge)
from mmpretrain.evaluation import Accuracy

from mae_mm.datasets import ImageFolder
from mae_mm.datasets.transforms import LoadImageSafe

data_root = 'data/imagenet'

# _scope_: RandAugment builds its policy ops by bare name, which resolve in mmpretrain only.
rand_augment = dict(
    type=RandAugment, _scope_='mmpretrain', policies='timm_increasing',
    num_policies=2, total_level=10, magnitude_level=9, magnitude_std=0.5,
    hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic'))
# Images are BGR here: fill colour and std are the ImageNet statistics in BGR order.
random_erasing = dict(
    type=RandomErasing, erase_prob=0.25, mode='rand', min_area_ratio=0.02,
    max_area_ratio=1 / 3, fill_color=[103.53, 116.28, 123.675],
    fill_std=[57.375, 57.12, 58.395])
train_pipeline = [
    dict(type=LoadImageSafe),
    dict(type=RandomResizedCrop, scale=224, backend='pillow', interpolation='bicubic'),
    dict(type=RandomFlip, prob=0.5, direction='horizontal'),
    rand_augment,
    random_erasing,
    dict(type=PackInputs),
]
test_pipeline = [
    dict(type=LoadImageSafe),
    dict(type=ResizeEdge, scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type=CenterCrop, crop_size=224),
    dict(type=PackInputs),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type=DefaultSampler, shuffle=True),
    collate_fn=dict(type=default_collate),
    dataset=dict(
        type=ImageFolder,
        data_root=data_root,
        data_prefix='train',
        with_label=True,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type=DefaultSampler, shuffle=False),
    collate_fn=dict(type=default_collate),
    dataset=dict(
        type=ImageFolder,
        data_root=data_root,
        data_prefix='val',
        with_label=True,
        test_mode=True,
        pipeline=test_pipeline))
val_evaluator = dict(type=Accuracy, topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
