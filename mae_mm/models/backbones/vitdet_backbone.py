"""ViTDetBackbone: the MAE encoder as a plain backbone for detection and segmentation."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from mae_mm.registry import MODELS
from ..layers.window_attention import WindowRelPosAttention
from .masked_vit import MaskedViT, resolve_arch


def default_global_blocks(num_layers: int) -> Tuple[int, ...]:
    """The last block of each quarter: (2, 5, 8, 11) for 12 blocks, (5, 11, 17, 23) for 24."""
    if num_layers < 4:
        return (num_layers - 1, )
    return tuple((i + 1) * num_layers // 4 - 1 for i in range(4))


@MODELS.register_module()
class ViTDetBackbone(MaskedViT):
    """The plain ViT backbone of ViTDet (Li et al., 2022), built on the MAE encoder.

    Same patch embedding, position table and block parameters as :class:`MaskedViT` (so the
    checkpoint that MAE pretraining writes, and official/timm/mmpretrain MAE files, load through
    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``), with:

    - window attention in most blocks and global attention in ``global_attn_indexes``
      (``window_size=0``: every block global, as for UperNet);
    - decomposed relative position bias, zero-initialised; pretraining checkpoints lack it, and
      the load report lists it as expected-missing (any other key that does not fit is an error,
      see :meth:`~DownstreamMixin.load_pretrained`);
    - the absolute position table resampled (bicubic, on its 2-D grid) to ``img_size`` when
      loading and to any other input grid in the forward pass;
    - no cls token: the tokens stay on their (H/p, W/p) grid and every output is an NCHW map of
      stride ``patch_size``. ``cls_token`` (and ``norm`` unless ``final_norm``) are kept, frozen,
      only so that checkpoints load and round-trip without unexpected keys.

    Args:
        arch (str | dict): 'b'/'l'/'h'... or a dict, as for :class:`MaskedViT`.
        img_size (int | tuple[int, int]): Training input size; sets the grid of the position
            table and of the relative tables of global blocks.
        patch_size (int): Patch side (the output stride).
        in_channels (int): Image channels.
        drop_path_rate (float): Stochastic depth, linearly increasing over the blocks.
        window_size (int): Window side of the windowed blocks (14 in ViTDet); 0 = all global.
        global_attn_indexes (Sequence[int], optional): Blocks with global attention; default the
            last block of each quarter ((2, 5, 8, 11) for ViT-B, (5, 11, 17, 23) for ViT-L).
        use_rel_pos (bool): Decomposed relative position bias in every block.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned, in this order
            (repeats allowed), as (N, D, H/p, W/p) maps.
        final_norm (bool): Apply the pretrained final LayerNorm to the last block's output.
        pad_to_img_size (bool): Zero-pad inputs smaller than ``img_size`` to it (bottom/right)
            and crop the maps back to the input's grid, so that the position table and the
            windows are those of training whatever the test image's shape (ViTDet's square
            padding, without moving the image boundary that boxes are clipped to).
        with_cp (bool): Activation checkpointing of each block while training (saves memory,
            costs a second forward pass).
        frozen_stages (int): As for :class:`MaskedViT`.
        qkv_bias (bool): Bias on the qkv projections.
        norm_eps (float): LayerNorm epsilon.
        pos_embed_trainable (bool): Fine-tune the absolute position table (ViTDet does).
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained', checkpoint=PATH,
            prefix='backbone.')``.
    """

    #: MAE checkpoints have no relative-position tables: ViTDet adds them (zero-initialised).
    EXPECTED_MISSING_KEYS = MaskedViT.EXPECTED_MISSING_KEYS + (r'\.rel_pos_[hw]$', )

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 1024,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 drop_path_rate: float = 0.1,
                 window_size: int = 14,
                 global_attn_indexes: Optional[Sequence[int]] = None,
                 use_rel_pos: bool = True,
                 out_indices: Union[int, Sequence[int]] = -1,
                 final_norm: bool = False,
                 pad_to_img_size: bool = False,
                 with_cp: bool = False,
                 frozen_stages: int = -1,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 pos_embed_trainable: bool = True,
                 init_cfg: Optional[dict] = None):
        settings = resolve_arch(arch)
        num_layers = settings['num_layers']
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        bad = [i for i in indices if not -num_layers <= i < num_layers]
        if bad or not indices:
            raise ValueError(f'out_indices={out_indices!r} must be non-empty block indices in '
                             f'[{-num_layers}, {num_layers - 1}] for {num_layers} blocks')
        if window_size < 0:
            raise ValueError(f'window_size={window_size} must be >= 0 (0: every block global)')
        if global_attn_indexes is None:
            global_attn_indexes = default_global_blocks(num_layers)
        global_blocks = {i % num_layers for i in global_attn_indexes
                         if -num_layers <= i < num_layers}
        if len(global_blocks) != len(set(global_attn_indexes)):
            raise ValueError(f'global_attn_indexes={tuple(global_attn_indexes)} must be distinct '
                             f'block indices in [0, {num_layers - 1}]')
        # Read by block_attention() while MaskedViT builds the blocks.
        self.window_size = window_size
        self.global_attn_indexes = tuple(sorted(global_blocks)) if window_size else tuple(
            range(num_layers))
        self.use_rel_pos = use_rel_pos
        super().__init__(
            arch=settings, img_size=img_size, patch_size=patch_size, in_channels=in_channels,
            mask_ratio=0.0, drop_path_rate=drop_path_rate, qkv_bias=qkv_bias,
            norm_eps=norm_eps, final_norm=final_norm, out_type='featmap',
            out_indices=out_indices, frozen_stages=frozen_stages,
            pos_embed_trainable=pos_embed_trainable, init_cfg=init_cfg)
        self.pad_to_img_size = pad_to_img_size
        self.with_cp = with_cp
        # Unused here, kept for lossless checkpoints; frozen so that DDP and the optimizer skip
        # them.
        self.cls_token.requires_grad_(False)
        if not final_norm:
            self.norm.requires_grad_(False)
        self._freeze_stages()

    def block_attention(self, index: int, num_heads: int, qkv_bias: bool) -> nn.Module:
        """Windowed attention (global in ``global_attn_indexes``) with relative positions."""
        return WindowRelPosAttention(
            self.embed_dims, num_heads, qkv_bias=qkv_bias,
            window_size=0 if index in self.global_attn_indexes else self.window_size,
            use_rel_pos=self.use_rel_pos, rel_pos_grid=self.grid_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps of the blocks in ``out_indices``.

        Args:
            x (Tensor): Images (N, C, H, W) of any size: sides that are not a multiple of
                ``patch_size`` are zero-padded at the bottom/right (the maps then cover the
                padded image); the position table is resampled to the grid unless
                ``pad_to_img_size`` pads the input to ``img_size``; windows are padded.

        Returns:
            tuple[Tensor]: One (N, embed_dims, ceil(H/p), ceil(W/p)) map per entry of
            ``out_indices``, in that order.
        """
        height, width = x.shape[-2:]
        out_grid = (-(-height // self.patch_size), -(-width // self.patch_size))
        pad_h, pad_w = (-height) % self.patch_size, (-width) % self.patch_size
        if self.pad_to_img_size:
            pad_h = max(pad_h, self.img_size[0] - height)
            pad_w = max(pad_w, self.img_size[1] - width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        tokens, grid = self.patch_embed(x)
        pos = self.position_embedding(grid)[:, 1:]
        tokens = (tokens + pos).reshape(tokens.shape[0], grid[0], grid[1], self.embed_dims)
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        maps = {}
        for i, block in enumerate(self.blocks):
            tokens = checkpoint(block, tokens, use_reentrant=False) if use_cp else block(tokens)
            if i in self.out_indices:
                out = self.norm(tokens) if self.final_norm and i == self.num_layers - 1 \
                    else tokens
                out = out[:, :out_grid[0], :out_grid[1]]
                maps[i] = out.permute(0, 3, 1, 2).contiguous()
        return tuple(maps[i] for i in self.out_indices)
