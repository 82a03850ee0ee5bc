"""projects/upernet: the mmseg configs follow the MAE segmentation recipe, and train and test at
toy scale from a checkpoint written by mae-mm pretraining, through tools/train.py and mmseg's
loops."""
from mmengine.config import Config

from .conftest import (UPERNET_B, UPERNET_L, UPERNET_TOY, UPERNET_TOY_LR, train_then_test,
                       upernet_toy_options)


def test_configs_follow_the_mae_segmentation_recipe():
    base, large = Config.fromfile(UPERNET_B), Config.fromfile(UPERNET_L)
    for cfg, arch, dims, out_indices, decay, drop_path in (
            (base, 'b', 768, (3, 5, 7, 11), 0.65, 0.1),
            (large, 'l', 1024, (7, 11, 15, 23), 0.8, 0.2)):
        assert cfg.default_scope == 'mmseg' and cfg.model.type == 'EncoderDecoder'
        assert cfg.model.pretrained is None
        backbone = cfg.model.backbone
        assert backbone.type == 'mae_mm.ViTDetBackbone' and backbone.arch == arch
        assert backbone.window_size == 0 and backbone.use_rel_pos  # global attention everywhere
        assert tuple(backbone.out_indices) == out_indices
        assert backbone.drop_path_rate == drop_path
        assert tuple(backbone.img_size) == (512, 512)
        assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
        assert f'mae_vit-{arch}_1600e' in backbone.init_cfg.checkpoint
        assert cfg.model.neck.type == 'Feature2Pyramid' and cfg.model.neck.embed_dim == dims
        assert cfg.model.decode_head.type == 'UPerHead'
        assert list(cfg.model.decode_head.in_channels) == [dims] * 4
        assert cfg.model.decode_head.num_classes == 150  # ADE20K
        optim = cfg.optim_wrapper
        assert optim.constructor == 'mae_mm.LayerDecayOptimWrapperConstructor'
        assert optim.paramwise_cfg.layer_decay_rate == decay
        assert optim.paramwise_cfg.decay_rule == 'beit_mmseg'
        assert 'num_layers' not in optim.paramwise_cfg  # read from the backbone
        assert optim.optimizer.type == 'AdamW' and optim.optimizer.lr == 1e-4
        assert optim.optimizer.weight_decay == 0.05
        assert cfg.train_cfg.max_iters == 160000
        assert cfg.train_dataloader.batch_size * 8 == 16
        assert tuple(cfg.crop_size) == (512, 512)
        warmup, poly = cfg.param_scheduler
        assert (warmup.type, warmup.end, poly.type, poly.end) == ('LinearLR', 1500, 'PolyLR',
                                                                  160000)


def test_toy_upernet_trains_and_tests_from_a_mae_mm_checkpoint(mae_checkpoint, voc_set,
                                                               tmp_path):
    metrics, outputs = train_then_test(
        UPERNET_TOY, upernet_toy_options(mae_checkpoint), tmp_path, mae_checkpoint,
        lr=UPERNET_TOY_LR, layer_decay=0.65, weight_decay=0.05, name='UperNet')
    assert {'mIoU', 'aAcc'} <= set(metrics)
    for sample in outputs:
        height, width = sample.ori_shape
        seg = sample.pred_sem_seg.data
        assert seg.shape == (1, height, width)
        assert ((seg >= 0) & (seg < 21)).all()
        assert sample.seg_logits.data.shape == (21, height, width)
