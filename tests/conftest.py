import pytest
import torch
from mmengine.registry import init_default_scope

import mae_mm  # noqa: F401  (registries)

TINY_ARCH = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)


@pytest.fixture(autouse=True)
def _seed_and_scope():
    # One intra-op thread: tiny models gain nothing from two, and OpenMP threads spin-wait on a
    # loaded 2-core machine (0.8 s instead of 0.004 s per tiny step, measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    init_default_scope('mae_mm')
    yield
    torch.set_num_threads(threads)


def tiny_mae_cfg(img_size=32, patch_size=8, **backbone):
    """A MaskedAutoencoder config small enough for CPU unit tests."""
    return dict(
        type='MaskedAutoencoder',
        backbone=dict(type='MaskedViT', arch=TINY_ARCH, img_size=img_size,
                      patch_size=patch_size, **backbone),
        neck=dict(type='MAEDecoder', decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4),
        head=dict(type='PixelReconstructionHead', norm_pix=True))


REPO_ROOT = __import__('os').path.dirname(__import__('os').path.dirname(__file__))


@pytest.fixture(scope='session')
def photo_folder(tmp_path_factory):
    """64 real photo crops (scikit-image's bundled photographs) as JPEG files in a folder."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata
    root = tmp_path_factory.mktemp('photos')
    rng = np.random.default_rng(0)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    for i in range(64):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - 96)
        left = rng.integers(0, photo.shape[1] - 96)
        Image.fromarray(photo[top:top + 96, left:left + 96]).save(root / f'img_{i:03d}.jpg',
                                                                   quality=90)
    return str(root)


def tiny_pretrain_cfg(data_root, work_dir, config='configs/mae_vit-b_1600e.py', max_iters=None,
                      batch_size=8, **overrides):
    """The real pretraining config, shrunk to a tiny ViT on 32 px crops of ``data_root``."""
    import os.path as osp

    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO_ROOT, config))
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'model.backbone.img_size': 32,
        'model.backbone.patch_size': 8,
        'model.neck.decoder_embed_dim': 32,
        'model.neck.decoder_depth': 1,
        'model.neck.decoder_num_heads': 4,
        'train_dataloader.batch_size': batch_size,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.pin_memory': False,
        'train_dataloader.dataset.data_root': str(data_root),
        'train_dataloader.dataset.data_prefix': '',
        'train_dataloader.dataset.pipeline.0.scale': 32,
        'optim_wrapper.type': 'OptimWrapper',
        'optim_wrapper.optimizer.lr': 2e-3,
        'default_hooks.logger.interval': 1,
        'resume': False,
        'auto_scale_lr.enable': False,
    })
    cfg.model.backbone.arch = dict(TINY_ARCH)  # a dict replacing the base's string
    for mixed_precision_key in ('loss_scale', 'dtype', 'cpu_dtype'):  # OptimWrapper takes none
        cfg.optim_wrapper.pop(mixed_precision_key, None)
    epochs = overrides.pop('max_epochs', 2)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=epochs, by_epoch=True,
                                convert_to_iter_based=True)]
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs)
    cfg.merge_from_dict(overrides)
    return cfg
