"""MaskedViT: the MAE encoder, which runs its Transformer on the visible patches only."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule

from mae_mm.registry import MODELS
from ..layers import (NOISE_FUNCTIONS, Block, PatchEmbed, RelPosBiasAttention, check_mask_config,
                      init_mae_weights, num_visible, random_masking, resize_pos_embed,
                      sincos_2d_position_embedding)
from .downstream import OUT_TYPES, DownstreamMixin
from .vit_arch import ARCH_ZOO, resolve_arch  # noqa: F401 (ARCH_ZOO: imported from here by tools)


#: Values of ``MaskedViT(rel_pos_bias=...)``.
REL_POS_BIAS_TYPES = (None, 'beit')


@MODELS.register_module()
class MaskedViT(DownstreamMixin, BaseModule):
    """Vision Transformer encoder of MAE.

    Patch-embeds the image, adds the fixed 2-D sin-cos position embedding, drops the masked
    patches, prepends the cls token and runs the blocks on the visible tokens only.
    Called unmasked (``mask=False``, or ``mask_ratio=0``), it is a plain ViT for fine-tuning,
    probing and downstream tasks: no token is dropped or shuffled.

    Args:
        arch (str | dict): 't'/'s'/'b'/'l'/'h' (or full names), or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads``, ``feedforward_channels``.
        img_size (int | tuple[int, int]): Training image size (H, W); divisible by the patch.
        patch_size (int): Patch side, e.g. 16 or 14.
        in_channels (int): Image channels.
        mask_ratio (float): Fraction of patches masked when masking; 0 disables masking.
        mask_strategy (str): 'random' | 'block' | 'grid' (see :mod:`..layers.mask_noise`).
        min_block_patches (int): Smallest block of the 'block' strategy.
        mask_token_in_encoder (bool): Ablation (paper Table 1c): replace masked patches by a
            learned token and run the encoder on all tokens.
        drop_path_rate (float): Stochastic depth, linearly increasing over the blocks.
        qkv_bias (bool): Bias on qkv projections.
        norm_eps (float): LayerNorm epsilon.
        final_norm (bool): Apply the final LayerNorm ``norm`` to the last block's output.
        out_type (str): Unmasked output: 'raw' (N, 1+L, D), 'cls_token' (N, D), 'featmap'
            (N, D, rows, cols) or 'avg_featmap' (N, D, mean of patch tokens then ``fc_norm``).
        out_indices (int | Sequence[int]): Blocks whose outputs are returned when unmasked.
        frozen_stages (int): Freeze patch embedding, cls and position (stage 0) and the first
            ``frozen_stages`` blocks; they stay in eval mode. -1 freezes nothing.
        pos_embed_trainable (bool): Fine-tuning makes the position embedding trainable;
            pretraining keeps it fixed.
        rel_pos_bias (str, optional): ``'beit'``: BEiT's per-head relative position bias in
            every block (``blocks.i.attn.relative_position_bias_table``, (2 Wh - 1)(2 Ww - 1) + 3
            entries with the cls token's, zero-initialised), as the MAE paper's segmentation
            transfer turns on for fine-tuning. Unmasked only (``mask_ratio=0``), and only at the
            grid of ``img_size`` (other input sizes raise). Pretraining checkpoints load with the
            tables reported as expected-missing. None (default): no bias.
        init_cfg (dict, optional): MMEngine init config (e.g. ``Pretrained``).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 mask_ratio: float = 0.75,
                 mask_strategy: str = 'random',
                 min_block_patches: int = 16,
                 mask_token_in_encoder: bool = False,
                 drop_path_rate: float = 0.0,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 final_norm: bool = True,
                 out_type: str = 'raw',
                 out_indices: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = -1,
                 pos_embed_trainable: bool = False,
                 rel_pos_bias: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if rel_pos_bias not in REL_POS_BIAS_TYPES:
            raise ValueError(f'rel_pos_bias={rel_pos_bias!r} is unknown: use one of '
                             f'{REL_POS_BIAS_TYPES}')
        if rel_pos_bias is not None and mask_ratio > 0:
            raise ValueError(f"rel_pos_bias={rel_pos_bias!r} is for transfer (unmasked): set "
                             f'mask_ratio=0 (got {mask_ratio})')
        self.rel_pos_bias = rel_pos_bias
        settings = resolve_arch(arch)
        self.embed_dims = settings['embed_dims']
        self.num_layers = settings['num_layers']
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.patch_size = patch_size
        self.in_channels = in_channels
        if self.img_size[0] % patch_size or self.img_size[1] % patch_size:
            raise ValueError(f'img_size={self.img_size} is not divisible by patch_size='
                             f'{patch_size}: use a multiple of {patch_size} (e.g. 224 for 16)')
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self._resampling_logged = False
        check_mask_config(mask_strategy, mask_ratio, self.grid_size, min_block_patches)
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type={out_type!r} is unknown: use one of {OUT_TYPES}')
        self.mask_ratio = mask_ratio
        self.mask_strategy = mask_strategy
        self.min_block_patches = min_block_patches
        self.out_type = out_type
        self.final_norm = final_norm
        self.frozen_stages = frozen_stages
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        self.out_indices = [i % self.num_layers for i in indices]

        self.patch_embed = PatchEmbed(patch_size, in_channels, self.embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(
            sincos_2d_position_embedding(self.grid_size, self.embed_dims),
            requires_grad=pos_embed_trainable)
        self.mask_token = (nn.Parameter(torch.zeros(1, 1, self.embed_dims))
                           if mask_token_in_encoder else None)
        rates = torch.linspace(0, drop_path_rate, self.num_layers).tolist()
        self.blocks = nn.ModuleList([
            Block(self.embed_dims, settings['num_heads'], settings['feedforward_channels'],
                  drop_path=rate, qkv_bias=qkv_bias, norm_eps=norm_eps,
                  attn=self.block_attention(i, settings['num_heads'], qkv_bias))
            for i, rate in enumerate(rates)
        ])
        if rel_pos_bias is not None and not all(
                isinstance(block.attn, RelPosBiasAttention) for block in self.blocks):
            raise ValueError(f'rel_pos_bias={rel_pos_bias!r} is not supported by '
                             f'{type(self).__name__}, whose blocks have their own attention')
        self.norm = nn.LayerNorm(self.embed_dims, eps=norm_eps)
        if not final_norm:
            # Unused, but kept so that pretraining checkpoints load without unexpected keys;
            # frozen so that DDP does not wait for its gradient.
            self.norm.requires_grad_(False)
        self.fc_norm = (nn.LayerNorm(self.embed_dims, eps=norm_eps)
                        if out_type == 'avg_featmap' else None)
        self._init_mae_weights()
        self._freeze_stages()

    def block_attention(self, index: int, num_heads: int,
                        qkv_bias: bool) -> Optional[nn.Module]:
        """The attention module of block ``index``; None: the plain global attention.
        Subclasses (e.g. :class:`ViTDetBackbone`) override it to build other blocks directly
        (called while the blocks are built, after ``grid_size`` is set). With
        ``rel_pos_bias='beit'``: global attention with BEiT's relative position bias."""
        if self.rel_pos_bias == 'beit':
            return RelPosBiasAttention(self.embed_dims, num_heads, qkv_bias, self.grid_size)
        return None

    def expected_missing_keys(self) -> Tuple[str, ...]:
        """Those of :class:`DownstreamMixin`, and the relative position bias tables when
        ``rel_pos_bias`` is set (pretraining checkpoints have none; they start at zero)."""
        keys = super().expected_missing_keys()
        if self.rel_pos_bias is not None:
            keys += (r'^blocks\.\d+\.attn\.relative_position_bias_table$', )
        return keys

    def _init_mae_weights(self) -> None:
        """The official initialisation, done at construction so that a later ``init_weights``
        with a ``Pretrained`` init_cfg loads on top of it instead of being overwritten."""
        init_mae_weights(self)
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def position_embedding(self, grid_size: Tuple[int, int]) -> torch.Tensor:
        """The (1, 1+L, D) table for ``grid_size``, resampled when it differs from training.

        The first resampling of this module is logged (one line naming
        ``model.backbone.img_size``); later ones, at every step of a run whose inputs have
        another size, are not."""
        grid_size = tuple(grid_size)
        if grid_size != self.grid_size and not self._resampling_logged:
            self._resampling_logged = True
            MMLogger.get_current_instance().info(
                f'{type(self).__name__}: position table resampled from its '
                f'{self.grid_size[0]} x {self.grid_size[1]} grid (model.backbone.img_size='
                f'{self.img_size[0] if self.img_size[0] == self.img_size[1] else self.img_size}'
                f') to {grid_size[0]} x {grid_size[1]} for inputs of '
                f'{grid_size[0] * self.patch_size} x {grid_size[1] * self.patch_size} px; '
                'logged once, not at every resampling')
        return resize_pos_embed(self.pos_embed, self.grid_size, grid_size)

    def make_noise(self, batch_size: int, grid_size: Tuple[int, int],
                   device: torch.device) -> torch.Tensor:
        """Per-patch noise of the configured strategy; the lowest ``len_keep`` are kept."""
        check_mask_config(self.mask_strategy, self.mask_ratio, grid_size, self.min_block_patches)
        fn = NOISE_FUNCTIONS[self.mask_strategy]
        if self.mask_strategy == 'block':
            return fn(batch_size, grid_size, self.mask_ratio, device,
                      min_block_patches=self.min_block_patches)
        return fn(batch_size, grid_size, self.mask_ratio, device)

    def forward_masked(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None):
        """Encode the visible patches (the official ``forward_encoder``).

        Args:
            x (Tensor): Images (N, C, H, W).
            noise (Tensor, optional): (N, L) per-patch scores; the lowest ``len_keep`` are kept.
                Drawn from the configured strategy when None.

        Returns:
            tuple: ``latent`` (N, 1 + len_keep, D) (all 1 + L tokens in the mask-token
            ablation), ``mask`` (N, L) with 1 = masked, ``ids_restore`` (N, L).
        """
        tokens, grid = self.patch_embed(x)  # (N, L, D)
        pos = self.position_embedding(grid)  # (1, 1 + L, D), cls position first
        tokens = tokens + pos[:, 1:]
        n, length, _ = tokens.shape
        if noise is None:
            noise = self.make_noise(n, grid, x.device)
        elif noise.shape != (n, length):
            raise ValueError(f'noise has shape {tuple(noise.shape)}, expected {(n, length)} '
                             '(batch, patches)')
        # visible (N, len_keep, D); mask (N, L), 1 = masked; ids_restore (N, L)
        visible, mask, ids_restore = random_masking(
            tokens, num_visible(length, self.mask_ratio), noise)
        if self.mask_token is not None:
            # Ablation: the encoder sees every position, masked ones as [M] + position, in the
            # patches' order, so the decoder's un-shuffling is the identity.
            masked = mask.unsqueeze(-1).to(tokens.dtype)  # (N, L, 1)
            visible = tokens * (1 - masked) + (self.mask_token + pos[:, 1:]) * masked
            ids_restore = torch.arange(length, device=x.device).expand(n, -1)
        cls = (self.cls_token + pos[:, :1]).expand(n, -1, -1)  # (N, 1, D)
        x = torch.cat([cls, visible], dim=1)  # (N, 1 + len_keep, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward(self, x: torch.Tensor, mask: Optional[bool] = None,
                noise: Optional[torch.Tensor] = None):
        """Masked encoding (pretraining) or plain features.

        Args:
            x (Tensor): Images (N, C, H, W); any size divisible by the patch size.
            mask (bool, optional): True masks, False never masks or shuffles; None masks
                exactly when ``mask_ratio > 0``.
            noise (Tensor, optional): Fixes the mask, see :meth:`forward_masked`.

        Returns:
            ``(latent, mask, ids_restore)`` when masking, else a tuple of features.
        """
        if mask is None:
            mask = self.mask_ratio > 0
        if mask:
            if self.mask_ratio <= 0:
                raise ValueError('mask=True needs backbone.mask_ratio > 0')
            return self.forward_masked(x, noise)
        return self.forward_features(x)
