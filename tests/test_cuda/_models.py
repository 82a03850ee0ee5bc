"""mae-mm's MAE for the CUDA tests: the recipes' ViT-B/16 model config (``configs/_base_/``)
on a GPU, the same config shrunk to a tiny ViT on 32 px off CUDA."""
import copy
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from ..conftest import REPO_ROOT, TINY_ARCH
from ._device import DEVICE, ON_CUDA

MODEL_CONFIG = osp.join(REPO_ROOT, 'configs', '_base_', 'models', 'mae_vit-base-p16.py')


#: A ViT-S-wide encoder of 4 blocks with a 2-block decoder: what the compile tests build on
#: CUDA, where inductor's compilation time grows with the number of blocks.
SHALLOW = dict(arch=dict(embed_dims=384, num_layers=4, num_heads=6, feedforward_channels=1536),
               decoder_depth=2)


def mae_cfg(arch='b', decoder_depth=None, **backbone) -> dict:
    """The recipes' ``model`` with ``arch`` on CUDA (224 px, patch 16, decoder 512 x 8, or
    ``decoder_depth`` blocks); a 2-block 64-wide ViT on 32 px, patch 8, decoder 32 x 1,
    elsewhere."""
    cfg = Config.fromfile(MODEL_CONFIG).model.to_dict()
    cfg.pop('data_preprocessor')  # the tests feed normalised tensors
    if ON_CUDA:
        cfg['backbone']['arch'] = arch
        if decoder_depth is not None:
            cfg['neck']['decoder_depth'] = decoder_depth
    else:
        cfg['backbone'].update(arch=dict(TINY_ARCH), img_size=32, patch_size=8)
        cfg['neck'].update(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    cfg['backbone'].update(backbone)
    return cfg


def build_mae(cfg: dict, seed: int = 0) -> torch.nn.Module:
    """The model of ``cfg`` with weights drawn from ``seed``, on the test device, training mode."""
    from mae_mm.registry import MODELS
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mae_mm'):
        model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    return model.to(DEVICE).train()


def images(cfg: dict, batch_size: int, seed: int = 0) -> torch.Tensor:
    """A normalised-looking batch of ``cfg``'s image size, the same for a given seed."""
    size = cfg['backbone']['img_size']
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, size, size, generator=gen).to(DEVICE)


def attention_layers(model: torch.nn.Module) -> int:
    """Attention calls of one forward: encoder blocks + decoder blocks."""
    return len(model.backbone.blocks) + len(model.neck.decoder_blocks)
