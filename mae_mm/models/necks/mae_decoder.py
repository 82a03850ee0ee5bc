"""MAEDecoder: the lightweight decoder that sees visible latents plus mask tokens."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from mae_mm.registry import MODELS
from ..layers import (Block, gather_tokens, init_mae_weights, resize_pos_embed,
                      sincos_2d_position_embedding)


@MODELS.register_module()
class MAEDecoder(BaseModule):
    """Project latents, insert mask tokens, un-shuffle, add positions, decode pixels per patch.

    Parameter names follow the official MAE checkpoint (``decoder_embed``, ``mask_token``,
    ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``).

    Args:
        embed_dim (int): Encoder width. :class:`MaskedAutoencoder` fills it from the backbone.
        patch_size (int): Patch side; filled from the backbone.
        in_channels (int): Image channels; filled from the backbone.
        grid_size (int | tuple[int, int]): Patch grid of training images; filled from the
            backbone. Other input sizes resample the position table.
        decoder_embed_dim (int): Decoder width (512 in the paper).
        decoder_depth (int): Decoder blocks (8).
        decoder_num_heads (int): Decoder heads (16).
        mlp_ratio (float): MLP hidden width / decoder width.
        norm_eps (float): LayerNorm epsilon.
        init_cfg (dict, optional): MMEngine init config.
    """

    def __init__(self,
                 embed_dim: int = 768,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 grid_size: Union[int, Sequence[int]] = 14,
                 decoder_embed_dim: int = 512,
                 decoder_depth: int = 8,
                 decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0,
                 norm_eps: float = 1e-6,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.grid_size = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_2d_position_embedding(self.grid_size, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, int(decoder_embed_dim * mlp_ratio),
                  norm_eps=norm_eps) for _ in range(decoder_depth)
        ])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=norm_eps)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_channels)
        init_mae_weights(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                grid_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Predict the pixels of every patch (official ``forward_decoder``).

        Args:
            latent (Tensor): (N, 1 + len_keep, D) encoder output, cls first.
            ids_restore (Tensor): (N, L) un-shuffling permutation from the encoder.
            grid_size (tuple[int, int], optional): Patch grid of this batch (default: training).

        Returns:
            Tensor: (N, L, p*p*C) predictions in the :func:`patchify` layout.
        """
        x = self.decoder_embed(latent)  # (N, 1 + len_keep, Dd)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)  # (N, L-keep, Dd)
        patches = gather_tokens(torch.cat([x[:, 1:], mask_tokens], dim=1), ids_restore)
        x = torch.cat([x[:, :1], patches], dim=1)  # (N, 1 + L, Dd), patches in original order
        x = x + resize_pos_embed(self.decoder_pos_embed, self.grid_size,
                                 grid_size or self.grid_size)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # (N, L, p*p*C), cls dropped
