"""projects/upernet's MAE-paper protocol config: MaskedViT with BEiT's relative position bias
(zero-initialised, expected-missing from MAE checkpoints), the paper's 100 epochs, BEiT/mmseg's
weight-decay split; its CPU toy twin keeps the same backbone and trains as shipped."""
import os
import os.path as osp
import re

from mmengine.config import Config

from .conftest import MAE_TOY_CHECKPOINT, REPO_ROOT, TOOLS_TRAIN, UPERNET_B, UPERNET_TOY

PAPER_B = osp.join(
    REPO_ROOT, 'projects/upernet/configs/upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-'
    '512x512.py')
PAPER_TOY = osp.join(
    REPO_ROOT, 'projects/upernet/configs/upernet_vit-t_mae-paper-relpos-bias_labelme-128px_toy-'
    'cpu.py')


def test_paper_config_states_the_protocol():
    cfg, decomposed = Config.fromfile(PAPER_B), Config.fromfile(UPERNET_B)
    backbone = cfg.model.backbone
    assert backbone.type == 'mae_mm.MaskedViT' and backbone.arch == 'b'
    assert backbone.rel_pos_bias == 'beit' and backbone.mask_ratio == 0.0
    assert 'use_rel_pos' not in backbone and 'window_size' not in backbone
    assert tuple(backbone.img_size) == (512, 512) and tuple(backbone.out_indices) == (3, 5, 7, 11)
    assert backbone.drop_path_rate == 0.1 and backbone.final_norm is False
    assert backbone.init_cfg.type == 'Pretrained'
    # 100 epochs of ADE20K (20,210 images) at 16 images per iteration.
    assert cfg.train_cfg.max_iters == 126313 == -(-100 * 20210 // 16)
    assert cfg.train_dataloader.batch_size * 8 == 16
    warmup, poly = cfg.param_scheduler
    assert (warmup.end, poly.begin, poly.end) == (1500, 1500, 126313)
    assert cfg.optim_wrapper.paramwise_cfg.decay_rule == 'beit_mmseg'
    assert cfg.optim_wrapper == decomposed.optim_wrapper
    assert cfg.model.decode_head == decomposed.model.decode_head
    # The decomposed alternative stays as it was, and says it is not the paper's.
    assert decomposed.model.backbone.type == 'mae_mm.ViTDetBackbone'
    assert decomposed.train_cfg.max_iters == 160000


def test_toy_twin_keeps_the_paper_backbone():
    paper, toy, base_toy = (Config.fromfile(PAPER_B), Config.fromfile(PAPER_TOY),
                            Config.fromfile(UPERNET_TOY))
    ignore = {'arch', 'img_size', 'init_cfg'}
    assert {k: v for k, v in toy.model.backbone.items() if k not in ignore} == \
        {k: v for k, v in paper.model.backbone.items() if k not in ignore}
    assert toy.model.backbone.arch == 't' and tuple(toy.model.backbone.img_size) == (128, 128)
    assert toy.model.backbone.init_cfg.checkpoint == MAE_TOY_CHECKPOINT
    assert toy.optim_wrapper.paramwise_cfg == paper.optim_wrapper.paramwise_cfg
    for key in ('train_dataloader', 'test_dataloader', 'param_scheduler', 'train_cfg'):
        assert toy[key] == base_toy[key], key


def test_paper_toy_config_trains_on_cpu_as_shipped(mae_checkpoint, voc_set, tmp_path,
                                                   monkeypatch):
    """``python tools/train.py <paper toy config>`` after the README's toy pretraining,
    shortened to 2 iterations with the validation (slide test) at the end."""
    expected = tmp_path / MAE_TOY_CHECKPOINT
    expected.parent.mkdir(parents=True)
    os.symlink(mae_checkpoint, expected)
    monkeypatch.chdir(tmp_path)
    TOOLS_TRAIN.main([PAPER_TOY, '--cfg-options', 'train_cfg.max_iters=2',
                      'train_cfg.val_interval=2'])
    work_dir = tmp_path / 'work_dirs' / osp.splitext(osp.basename(PAPER_TOY))[0]
    assert osp.isfile(work_dir / 'iter_2.pth')
    logs = [osp.join(root, name) for root, _, names in os.walk(work_dir) for name in names
            if name.endswith('.log')]
    log = open(logs[0]).read()
    assert 'Saving checkpoint at 2 iterations' in log
    assert re.search(r'Iter\(val\) \[3/3\].*mIoU', log)
    # The tables are reported as expected-missing from the MAE checkpoint, not as an error.
    assert 'relative_position_bias_table' in log
