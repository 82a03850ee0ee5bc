# UperNet at toy scale, for a laptop CPU: the ViT-B recipe
# (upernet_vit-b_8xb2-160k_ade20k-512x512.py: global attention with relative positions,
# Feature2Pyramid, UperHead + auxiliary FCN head, layer decay) with a ViT-T backbone, 128 px
# crops, narrow heads and 100 iterations, on the 3 PASCAL VOC photos of Debian's labelme-examples
# and their class masks (0-20, 255 = ignore), read in place.
# See projects/upernet/README.md:
#
#   sudo apt-get install labelme-examples
#   python tools/quickstart.py \
#       --config projects/vitdet/configs/mae_vit-t-p16_photos-64px_toy-cpu.py \
#       --work-dir work_dirs/mae_vit-t-p16_photos-64px_toy-cpu --iters 300
#   python tools/train.py projects/upernet/configs/upernet_vit-t_labelme-128px_toy-cpu.py
#
# It only shows that the pieces fit and that the loss falls: 3 photos measure nothing.
_base_ = ['./upernet_vit-b_8xb2-160k_ade20k-512x512.py']
from mae_mm.models.backbones.vit_arch import resolve_arch  # noqa: E402

# The ViT size by name: 't' (192 wide) or 's' (384), both 12 blocks like 'b', so the recipe's
# feature blocks 3/5/7/11 apply; the neck and heads read the width from here.
arch = 't'
embed_dims = resolve_arch(arch)['embed_dims']
# The checkpoint of the toy pretraining above (mae_vit-t-p16_photos-64px_toy-cpu.py).
pretrained = 'work_dirs/mae_vit-t-p16_photos-64px_toy-cpu/iter_300.pth'
# labelme-examples' VOC masks; another location: LABELME_EX=/path/to/labelme/examples.
data_root = '{{$LABELME_EX:/usr/share/doc/labelme-examples/examples}}' + \
    '/semantic_segmentation/data_dataset_voc/'
classes = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
           'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'potted plant',
           'sheep', 'sofa', 'train', 'tv/monitor')
crop_size = (128, 128)
max_iters = 100

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=arch,
        img_size=crop_size,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(embed_dim=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=64, num_classes=len(classes)),
    auxiliary_head=dict(in_channels=embed_dims, channels=32, num_classes=len(classes)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(96, 96)))

# The ADE20K pipeline at 128 px (VOC masks: 0 is a class, no zero-label reduction), with a milder
# scale jitter than the recipe's 0.5-2.0 on 3 photos.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='RandomResize', scale=(2 * crop_size[0], crop_size[1]), ratio_range=(0.8, 1.25),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2 * crop_size[0], crop_size[1]), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=False),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassPNG'),
    reduce_zero_label=False,
    metainfo=dict(classes=classes))
train_dataloader = dict(
    batch_size=3,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, _delete_=True, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, _delete_=True, pipeline=test_pipeline))
test_dataloader = val_dataloader

# Toy learning rate (the recipe's 1e-4 is for 16 images x 160k iterations), 10 warm-up steps.
optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=10, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
