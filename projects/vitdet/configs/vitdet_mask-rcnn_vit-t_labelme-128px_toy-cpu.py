# ViTDet at toy scale, for a laptop CPU: the ViT-B recipe (vitdet_mask-rcnn_vit-b_lsj-100e_coco.py:
# window + global attention, relative positions, simple feature pyramid, LSJ, layer decay) with a
# ViT-T backbone, 128 px images, narrow heads and 100 iterations, on the 3 annotated PASCAL VOC
# photos of Debian's labelme-examples (COCO format, read in place). See projects/vitdet/README.md:
#
#   sudo apt-get install labelme-examples
#   python tools/quickstart.py \
#       --config projects/vitdet/configs/mae_vit-t-p16_photos-64px_toy-cpu.py \
#       --work-dir work_dirs/mae_vit-t-p16_photos-64px_toy-cpu --iters 300
#   python tools/train.py projects/vitdet/configs/vitdet_mask-rcnn_vit-t_labelme-128px_toy-cpu.py
#
# It only shows that the pieces fit and that the loss falls: 3 photos measure nothing.
_base_ = ['./vitdet_mask-rcnn_vit-b_lsj-100e_coco.py']
from mae_mm.models.backbones.vit_arch import resolve_arch  # noqa: E402

# The ViT size by name: 't' (192 wide) or 's' (384), both 12 blocks like 'b', so the recipe's
# global blocks 2/5/8/11 apply; the neck reads the width from here.
arch = 't'
embed_dims = resolve_arch(arch)['embed_dims']
# The checkpoint of the toy pretraining above (mae_vit-t-p16_photos-64px_toy-cpu.py).
pretrained = 'work_dirs/mae_vit-t-p16_photos-64px_toy-cpu/iter_300.pth'
# labelme-examples' COCO set; another location: LABELME_EX=/path/to/labelme/examples.
data_root = '{{$LABELME_EX:/usr/share/doc/labelme-examples/examples}}' + \
    '/instance_segmentation/data_dataset_coco/'
classes = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
           'diningtable', 'dog', 'horse', 'motorbike', 'person', 'potted plant', 'sheep', 'sofa',
           'train', 'tv/monitor')
image_size = (128, 128)
channels = 64  # neck and head widths (256 in the recipe)
max_iters = 100

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],  # the 128 x 128 square, in training and at test
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        arch=arch,
        img_size=image_size,
        pretrain_img_size=64,  # the toy pretraining's 64 px: a 4 x 4 table, kept as such
        window_size=4,  # 4 x 4 windows on the 8 x 8 grid (14 on the recipe's 64 x 64)
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=embed_dims, out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=dict(in_channels=channels, conv_out_channels=channels, fc_out_channels=128,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=channels,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(
        rpn=dict(nms_pre=200, max_per_img=100),
        # A toy model's scores are low: keep its best 20 boxes whatever their score.
        rcnn=dict(score_thr=0.0, max_per_img=20)))

# LSJ at 128 px, with a milder scale jitter than the recipe's 0.1-2.0 on 3 photos.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
dataset = dict(
    type='CocoDataset',
    data_root=data_root,
    ann_file='annotations.json',
    data_prefix=dict(img=''),
    metainfo=dict(classes=classes))
# The 3 photos in every batch; one pass of the RepeatDataset holds every iteration.
train_dataloader = dict(
    batch_size=3,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(times=max_iters, dataset=dict(dataset, pipeline=train_pipeline)))
val_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations.json')
test_evaluator = val_evaluator

# Toy learning rate (the recipe's 1e-4 is for 64 images x 184k iterations), 10 warm-up steps.
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.9)], gamma=0.1),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters, dynamic_intervals=None)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=3)
