"""PixelReconstructionHead: build the pixel target and score the decoder's prediction."""
from typing import Optional

import torch
from mmengine.model import BaseModule

from mae_mm.registry import MODELS
from ..layers import patchify


@MODELS.register_module()
class PixelReconstructionHead(BaseModule):
    """Patchify the (normalised) input image as the target, optionally per-patch normalised.

    Args:
        patch_size (int): Patch side; :class:`MaskedAutoencoder` fills it from the backbone.
        norm_pix (bool): Normalise every target patch by its own mean and (unbiased) variance,
            the paper's better target (Table 1d).
        norm_pix_eps (float): Added to the variance (1e-6, as the official code).
        loss (dict): Config of the loss, default :class:`NormalizedPixelLoss` (L2).
        init_cfg (dict, optional): MMEngine init config.
    """

    def __init__(self, patch_size: int = 16, norm_pix: bool = True, norm_pix_eps: float = 1e-6,
                 loss: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.patch_size = patch_size
        self.norm_pix = norm_pix
        self.norm_pix_eps = norm_pix_eps
        loss = dict(type='NormalizedPixelLoss') if loss is None else dict(loss)
        loss.setdefault('_scope_', 'mae_mm')
        self.loss_module = MODELS.build(loss)

    def patch_statistics(self, imgs: torch.Tensor):
        """Per-patch mean and std of the target, each (N, L, 1), as used by ``norm_pix``."""
        patches = patchify(imgs.float(), self.patch_size)
        mean = patches.mean(dim=-1, keepdim=True)
        std = (patches.var(dim=-1, keepdim=True) + self.norm_pix_eps).sqrt()
        return mean, std

    def construct_target(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, p*p*C) fp32 target."""
        target = patchify(imgs.float(), self.patch_size)
        if self.norm_pix:
            mean, std = self.patch_statistics(imgs)
            target = (target - mean) / std
        return target

    def loss(self, pred: torch.Tensor, imgs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss of ``pred`` (N, L, p*p*C) against ``imgs`` on ``mask``."""
        return self.loss_module(pred, self.construct_target(imgs), mask)
