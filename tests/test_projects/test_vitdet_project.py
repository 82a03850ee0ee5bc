"""projects/vitdet: the mmdet configs follow the ViTDet recipe, and train and test at toy scale
from a checkpoint written by mae-mm pretraining, through tools/train.py and mmdet's loops."""
import math

import torch
from mmengine.config import Config

from .conftest import (TOY_IMG, VITDET_B, VITDET_L, VITDET_TOY, VITDET_TOY_LR,
                       train_then_test, vitdet_toy_options)


def test_configs_follow_the_vitdet_recipe():
    base, large = Config.fromfile(VITDET_B), Config.fromfile(VITDET_L)
    for cfg, arch, dims, decay, drop_path, global_blocks in (
            (base, 'b', 768, 0.7, 0.1, (2, 5, 8, 11)),
            (large, 'l', 1024, 0.8, 0.4, (5, 11, 17, 23))):
        assert cfg.default_scope == 'mmdet' and cfg.model.type == 'MaskRCNN'
        backbone = cfg.model.backbone
        assert backbone.type == 'mae_mm.ViTDetBackbone' and backbone.arch == arch
        assert (backbone.window_size, tuple(backbone.global_attn_indexes)) == (14, global_blocks)
        assert backbone.drop_path_rate == drop_path and backbone.use_rel_pos
        assert tuple(backbone.img_size) == (1024, 1024) and backbone.patch_size == 16
        # The reference's semantics: the table of the 224 px pretraining, interpolated in the
        # forward pass; padded window keys take part; none of mae-mm's departures.
        assert backbone.pretrain_img_size == 224
        for option in ('mask_padded_keys', 'pos_embed_resample_at_load', 'pad_patch_remainder',
                       'pad_to_img_size', 'crop_to_input'):
            assert not backbone.get(option, False), option
        # detectron2's square_pad=1024: batches padded to the square in training and at test.
        assert cfg.model.data_preprocessor.pad_size_divisor == 1024
        assert not any(t.type == 'Pad' for t in cfg.test_dataloader.dataset.pipeline)
        assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
        assert f'mae_vit-{arch}_1600e' in backbone.init_cfg.checkpoint
        assert cfg.model.neck.type == 'mae_mm.SimpleFeaturePyramid'
        assert cfg.model.neck.in_channels == dims and cfg.model.neck.num_outs == 5
        optim = cfg.optim_wrapper
        assert optim.constructor == 'mae_mm.LayerDecayOptimWrapperConstructor'
        assert optim.paramwise_cfg.layer_decay_rate == decay
        assert 'num_layers' not in optim.paramwise_cfg  # read from the backbone
        assert optim.optimizer.type == 'AdamW' and optim.optimizer.lr == 1e-4
        assert optim.optimizer.weight_decay == 0.1
        assert tuple(optim.optimizer.betas) == (0.9, 0.999)
        # LSJ 1024: scale jitter 0.1-2.0, crops and padding to 1024 x 1024.
        lsj = cfg.train_dataloader.dataset.dataset.pipeline
        assert tuple(lsj[2].ratio_range) == (0.1, 2.0) and tuple(lsj[2].scale) == (1024, 1024)
        assert tuple(lsj[3].crop_size) == (1024, 1024)
        assert tuple(cfg.model.data_preprocessor.batch_augments[0].size) == (1024, 1024)
        # 100 epochs of COCO at batch 64.
        assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 184375
        assert math.isclose(184375 * 64 / 118000, 100, rel_tol=1e-3)
        assert cfg.auto_scale_lr.base_batch_size == 64
        warmup, steps = cfg.param_scheduler
        assert (warmup.end, warmup.start_factor, steps.milestones) == (
            250, 0.001, [163889, 177546])


def test_toy_vitdet_trains_and_tests_from_a_mae_mm_checkpoint(mae_checkpoint, coco_set,
                                                             tmp_path):
    metrics, outputs = train_then_test(
        VITDET_TOY, vitdet_toy_options(mae_checkpoint), tmp_path, mae_checkpoint,
        lr=VITDET_TOY_LR, layer_decay=0.7, weight_decay=0.1, name='ViTDet')
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    for sample in outputs:
        height, width = sample.ori_shape
        assert max(sample.img_shape) == TOY_IMG  # resized for the model, predicted at full size
        # Tested on the padded square, as detectron2 (square_pad), boxes clipped to the image.
        assert tuple(sample.batch_input_shape) == (TOY_IMG, TOY_IMG)
        pred = sample.pred_instances
        count = len(pred)
        assert 0 < count <= 20
        assert pred.bboxes.shape == (count, 4) and pred.scores.shape == (count, )
        assert pred.masks.shape == (count, height, width) and pred.masks.dtype == torch.bool
        assert ((pred.labels >= 0) & (pred.labels < 20)).all()
        boxes = pred.bboxes
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
