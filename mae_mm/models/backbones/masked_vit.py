"""MaskedViT: the MAE encoder, which runs its Transformer on the visible patches only."""
import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule

from mae_mm.registry import MODELS
from ..layers import (NOISE_FUNCTIONS, Block, check_mask_config, init_mae_weights,
                      keep_lowest_noise, num_visible, resize_pos_embed,
                      sincos_2d_position_embedding)
from ..layers.masking import gather_tokens, split_by_noise

ARCH_ZOO: Dict[str, dict] = {
    'tiny': dict(embed_dims=192, num_layers=12, num_heads=3, feedforward_channels=768),
    'small': dict(embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536),
    'base': dict(embed_dims=768, num_layers=12, num_heads=12, feedforward_channels=3072),
    'large': dict(embed_dims=1024, num_layers=24, num_heads=16, feedforward_channels=4096),
    'huge': dict(embed_dims=1280, num_layers=32, num_heads=16, feedforward_channels=5120),
}
ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large', 'h': 'huge'}
OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """An arch name (``'b'``, ``'base'``...) or a custom dict -> the full settings dict."""
    if isinstance(arch, str):
        name = ARCH_ALIASES.get(arch.lower(), arch.lower())
        if name not in ARCH_ZOO:
            raise ValueError(f'arch={arch!r} is unknown: use one of {sorted(ARCH_ZOO)} '
                             f'(or {sorted(ARCH_ALIASES)}), or a dict with embed_dims, '
                             'num_layers, num_heads, feedforward_channels')
        return dict(ARCH_ZOO[name])
    arch = dict(arch)
    if 'feedforward_channels' not in arch and 'embed_dims' in arch:
        arch['feedforward_channels'] = int(arch['embed_dims'] * arch.pop('mlp_ratio', 4))
    missing = {'embed_dims', 'num_layers', 'num_heads', 'feedforward_channels'} - set(arch)
    if missing:
        raise ValueError(f'custom arch dict lacks {sorted(missing)}: give embed_dims, '
                         'num_layers, num_heads and feedforward_channels (or mlp_ratio)')
    return arch


def to_2tuple(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens, through a strided convolution (``proj``)."""

    def __init__(self, patch_size: int, in_channels: int, embed_dims: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)

    def grid(self, x: torch.Tensor) -> Tuple[int, int]:
        """The patch grid (H/p, W/p) of images ``x``; one-line error when not divisible."""
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f'input size {h}x{w} is not divisible by patch_size '
                             f'{self.patch_size}: resize or crop the images to a multiple')
        return h // self.patch_size, w // self.patch_size

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(N, C, H, W) -> tokens (N, H/p * W/p, D) and the grid (H/p, W/p)."""
        self.grid(x)
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])

    def pixel_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, C*p*p), each patch flattened like ``proj``'s weight."""
        (rows, cols), p = self.grid(x), self.patch_size
        n, c = x.shape[:2]
        x = x.reshape(n, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, rows * cols, c * p * p)

    def project(self, pixel_patches: torch.Tensor) -> torch.Tensor:
        """Tokens of patches from :meth:`pixel_patches` (N, K, C*p*p) -> (N, K, D).

        The patches go through ``proj`` itself, not through its weight tensor, so wrappers
        that act in a module's forward (FSDP unsharding a separately wrapped ``proj``, hooks)
        still apply: laid side by side as one p x (K*p) image per sample, which the strided
        convolution maps to K tokens (4-6x faster than K separate p x p images).
        """
        n, k, _ = pixel_patches.shape
        p = self.patch_size
        strip = pixel_patches.reshape(n, k, -1, p, p).permute(0, 2, 3, 1, 4)
        strip = strip.reshape(n, -1, p, k * p)
        return self.proj(strip).flatten(2).transpose(1, 2)  # (N, D, 1, K) -> (N, K, D)


@MODELS.register_module()
class MaskedViT(BaseModule):
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
        mask_strategy (str): 'random' | 'block' | 'grid' (see :mod:`..layers.masking`).
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
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        settings = resolve_arch(arch)
        self.embed_dims = settings['embed_dims']
        self.num_layers = settings['num_layers']
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.in_channels = in_channels
        if self.img_size[0] % patch_size or self.img_size[1] % patch_size:
            raise ValueError(f'img_size={self.img_size} is not divisible by patch_size='
                             f'{patch_size}: use a multiple of {patch_size} (e.g. 224 for 16)')
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
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
        self.norm = nn.LayerNorm(self.embed_dims, eps=norm_eps)
        if not final_norm:
            # Unused, but kept so that pretraining checkpoints load without unexpected keys;
            # frozen so that DDP does not wait for its gradient.
            self.norm.requires_grad_(False)
        self.fc_norm = (nn.LayerNorm(self.embed_dims, eps=norm_eps)
                        if out_type == 'avg_featmap' else None)
        self._init_mae_weights()
        self._freeze_stages()

    # -- initialisation ------------------------------------------------------------------------
    def block_attention(self, index: int, num_heads: int,
                        qkv_bias: bool) -> Optional[nn.Module]:
        """The attention module of block ``index``; None: the plain global attention.
        Subclasses (e.g. :class:`ViTDetBackbone`) override it to build other blocks directly
        (called while the blocks are built, after ``grid_size`` is set)."""
        return None

    def _init_mae_weights(self) -> None:
        """The official initialisation, done at construction so that a later ``init_weights``
        with a ``Pretrained`` init_cfg loads on top of it instead of being overwritten."""
        init_mae_weights(self)
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    # Keys a pretraining checkpoint never has: added by fine-tuning or downstream subclasses.
    EXPECTED_MISSING_KEYS = (r'^fc_norm\.', r'^mask_token$', r'rel_pos', r'relative_position')

    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` from any
        checkpoint format (mae-mm, official MAE, timm, mmpretrain), resampling the position table
        to this model's grid and logging every missing and unexpected key by name."""
        cfg = self.init_cfg if isinstance(self.init_cfg, dict) else None
        if cfg and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix', 'backbone.'))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint, prefix: str = 'backbone.') -> str:
        """Load encoder weights from a checkpoint file or dict of any supported format.

        Returns:
            str: The key report (also logged). Missing keys other than those of
            ``EXPECTED_MISSING_KEYS`` are logged as a warning.
        """
        from mae_mm.utils.checkpoint import load_backbone_state_dict, split_key_mismatch
        state = load_backbone_state_dict(checkpoint, prefix=prefix)
        if 'pos_embed' in state and state['pos_embed'].shape != self.pos_embed.shape:
            num = state['pos_embed'].shape[1] - 1
            side = int(round(num**0.5))
            if side * side != num:
                raise ValueError(f'checkpoint pos_embed has {num} grid tokens, not a square '
                                 'grid: resize it to this model before loading')
            state['pos_embed'] = resize_pos_embed(state['pos_embed'], (side, side),
                                                  self.grid_size)
        mismatch = split_key_mismatch(self.state_dict(), state, self.EXPECTED_MISSING_KEYS)
        name = checkpoint if isinstance(checkpoint, str) else 'checkpoint'
        report = mismatch.report(f'{type(self).__name__} <- {name}')
        logger = MMLogger.get_current_instance()
        logger.log(logging.INFO if mismatch.ok else logging.WARNING, report)
        for key, _, _ in mismatch.shape_mismatch:
            state.pop(key)
        self.load_state_dict(state, strict=False)
        self._freeze_stages()
        return report

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed, *self.blocks[:self.frozen_stages]]
        if self.frozen_stages >= self.num_layers:
            frozen.append(self.norm)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        self.cls_token.requires_grad = False
        self.pos_embed.requires_grad = False

    def train(self, mode: bool = True) -> 'MaskedViT':
        super().train(mode)
        self._freeze_stages()
        return self

    # -- pieces of the forward pass ------------------------------------------------------------
    def position_embedding(self, grid_size: Tuple[int, int]) -> torch.Tensor:
        """The (1, 1+L, D) table for ``grid_size``, resampled when it differs from training."""
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

    def _checked_noise(self, noise: Optional[torch.Tensor], batch_size: int,
                       grid: Tuple[int, int], device: torch.device) -> torch.Tensor:
        """``noise`` after a shape check, or drawn from the configured strategy when None."""
        if noise is None:
            return self.make_noise(batch_size, grid, device)
        if noise.shape != (batch_size, grid[0] * grid[1]):
            raise ValueError(f'noise has shape {tuple(noise.shape)}, expected '
                             f'{(batch_size, grid[0] * grid[1])} (batch, patches)')
        return noise

    def forward_masked(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None):
        """Encode the visible patches.

        Args:
            x (Tensor): Images (N, C, H, W).
            noise (Tensor, optional): (N, L) per-patch scores; the lowest ``len_keep`` are kept.
                Drawn from the configured strategy when None.

        Returns:
            tuple: ``latent`` (N, 1 + len_keep, D) (all 1 + L tokens in the mask-token
            ablation), ``mask`` (N, L) with 1 = masked, ``ids_restore`` (N, L).
        """
        n = x.shape[0]
        if self.mask_token is None and type(self.patch_embed) is PatchEmbed:
            # The embedding acts on each patch alone, so embedding the visible patches only
            # gives the visible tokens of the full embedding, for (1 - mask_ratio) of the work.
            grid = self.patch_embed.grid(x)
            noise = self._checked_noise(noise, n, grid, x.device)
            ids_keep, mask, ids_restore = split_by_noise(
                noise, num_visible(grid[0] * grid[1], self.mask_ratio))
            pos = self.position_embedding(grid)
            pixels = gather_tokens(self.patch_embed.pixel_patches(x), ids_keep)
            visible = (self.patch_embed.project(pixels) +
                       gather_tokens(pos[:, 1:].expand(n, -1, -1), ids_keep))
        else:
            tokens, grid = self.patch_embed(x)  # (N, L, D)
            length = tokens.shape[1]
            pos = self.position_embedding(grid)
            tokens = tokens + pos[:, 1:]
            noise = self._checked_noise(noise, n, grid, tokens.device)
            visible, mask, ids_restore = keep_lowest_noise(
                tokens, num_visible(length, self.mask_ratio), noise)
            if self.mask_token is not None:
                # Ablation: the encoder sees every position, masked ones as [M] + position.
                masked = mask.unsqueeze(-1).to(tokens.dtype)
                visible = tokens * (1 - masked) + (self.mask_token + pos[:, 1:]) * masked
                ids_restore = torch.arange(length, device=x.device).expand(n, -1)
        cls = (self.cls_token + pos[:, :1]).expand(n, -1, -1)
        latent = torch.cat([cls, visible], dim=1)
        for block in self.blocks:
            latent = block(latent)
        return self.norm(latent), mask, ids_restore

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Encode every patch (no masking, no shuffling); outputs per ``out_indices``."""
        tokens, grid = self.patch_embed(x)
        n = tokens.shape[0]
        pos = self.position_embedding(grid)
        cls = (self.cls_token + pos[:, :1]).expand(n, -1, -1)
        tokens = torch.cat([cls, tokens + pos[:, 1:]], dim=1)
        outs = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i == self.num_layers - 1 and self.final_norm:
                tokens = self.norm(tokens)
            if i in self.out_indices:
                outs.append(self._format_output(tokens, grid))
        return tuple(outs)

    def _format_output(self, tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        if self.out_type == 'raw':
            return tokens
        if self.out_type == 'cls_token':
            return tokens[:, 0]
        patches = tokens[:, 1:]
        if self.out_type == 'featmap':
            return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        return self.fc_norm(patches.mean(dim=1))  # avg_featmap

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
