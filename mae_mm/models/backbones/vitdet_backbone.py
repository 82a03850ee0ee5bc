"""ViTDetBackbone: the MAE encoder as a plain backbone for detection and segmentation."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch.utils.checkpoint import checkpoint

from mae_mm.registry import MODELS
from ..layers import resize_pos_embed, sincos_2d_position_embedding
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
    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``). By default its
    forward pass is that of the ViTDet reference (detectron2 ``projects/ViTDet``, mmdet's port):

    - the patch convolution drops the bottom/right remainder of sides that are not a multiple of
      ``patch_size`` (120 px: a 7 x 7 grid);
    - the absolute position table keeps the pretraining checkpoint's grid
      (``pretrain_img_size / patch_size``: 1 + 14 x 14 positions for ViT-B/16 at 224) as its
      parameter, and is interpolated (bicubic, ``align_corners=False``, without the cls row) to
      the input's grid in every forward pass, so that fine-tuning trains the pretraining table;
    - window attention in most blocks and global attention in ``global_attn_indexes``
      (``window_size=0``: every block global, as for UperNet); windows that overhang the grid are
      zero-padded and the padded tokens take part as keys;
    - decomposed relative position bias, zero-initialised; pretraining checkpoints lack it, and
      the load report lists it as expected-missing (any other key that does not fit is an error,
      see :meth:`~DownstreamMixin.load_pretrained`);
    - no cls token: the tokens stay on their grid and every output is an NCHW map of stride
      ``patch_size``. ``cls_token`` (and ``norm`` unless ``final_norm``) are kept, frozen, only
      so that checkpoints load and round-trip without unexpected keys.

    Padding the images to a square (detectron2's ``square_pad=1024``) is the data
    preprocessor's job, as in the reference, so that the pyramid and the heads run on the padded
    canvas (the projects' configs: ``pad_size_divisor=1024``).

    Departures from the reference that mae-mm offers as named options (all off by default, and
    in the paper configs; projects/vitdet/README.md gives their measured effect):
    ``mask_padded_keys``, ``pos_embed_resample_at_load``, ``pad_patch_remainder``,
    ``pad_to_img_size`` with ``crop_to_input``.

    Args:
        arch (str | dict): 'b'/'l'/'h'... or a dict, as for :class:`MaskedViT`.
        img_size (int | tuple[int, int]): Training input size; sets the grid of the relative
            tables of global blocks (and of ``pad_to_img_size``).
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
        pretrain_img_size (int | tuple[int, int]): Image size of the pretraining, which sets the
            grid of the position table (224: 14 x 14 for patch 16), as detectron2's and mmdet's
            ``pretrain_img_size``. A checkpoint with another table is resampled to it once, at
            load time (logged).
        pos_embed_resample_at_load (bool): mae-mm option: size the table for ``img_size``
            instead (the checkpoint's table is resampled once, at load time, and fine-tuned at
            that resolution; other input grids resample it again). Defaults to False.
        mask_padded_keys (bool): mae-mm option: mask the zero-padded tokens of windows that
            overhang the grid out as keys (an edge window then attends only to its image
            tokens). Defaults to False (the reference lets them take part).
        pad_patch_remainder (bool): mae-mm option: zero-pad sides that are not a multiple of
            ``patch_size`` to the next multiple (the maps then cover the padded image) instead of
            dropping the remainder. Defaults to False.
        pad_to_img_size (bool): Zero-pad inputs smaller than ``img_size`` to it (bottom/right)
            inside the backbone: the reference's square padding for a pipeline that does not pad
            (the maps cover the padded canvas). Defaults to False (the data preprocessor pads).
        crop_to_input (bool): mae-mm option, with ``pad_to_img_size``: crop the maps back to the
            input's grid, so that the pyramid and the heads see only the image (the reference
            runs them on the padded canvas). Defaults to False.
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
    #: The reference ViTDet detectors (mmdet, detectron2) have no cls token, which this backbone
    #: keeps only for round trips and never uses.
    EXPECTED_MISSING_KEYS = MaskedViT.EXPECTED_MISSING_KEYS + (r'\.rel_pos_[hw]$', r'^cls_token$')

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
                 pretrain_img_size: Union[int, Sequence[int]] = 224,
                 pos_embed_resample_at_load: bool = False,
                 mask_padded_keys: bool = False,
                 pad_patch_remainder: bool = False,
                 pad_to_img_size: bool = False,
                 crop_to_input: bool = False,
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
        pretrain = ((pretrain_img_size, pretrain_img_size) if isinstance(pretrain_img_size, int)
                    else tuple(pretrain_img_size))
        if len(pretrain) != 2 or any(side < patch_size or side % patch_size for side in pretrain):
            raise ValueError(f'pretrain_img_size={pretrain_img_size!r} must be the pretraining '
                             f'image size, a multiple of patch_size={patch_size} (e.g. 224)')
        if crop_to_input and not pad_to_img_size:
            raise ValueError('crop_to_input=True crops what pad_to_img_size pads: set '
                             'pad_to_img_size=True as well, or crop_to_input=False')
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
        self.mask_padded_keys = mask_padded_keys
        super().__init__(
            arch=settings, img_size=img_size, patch_size=patch_size, in_channels=in_channels,
            mask_ratio=0.0, drop_path_rate=drop_path_rate, qkv_bias=qkv_bias,
            norm_eps=norm_eps, final_norm=final_norm, out_type='featmap',
            out_indices=out_indices, frozen_stages=frozen_stages,
            pos_embed_trainable=pos_embed_trainable, init_cfg=init_cfg)
        self.pretrain_img_size = pretrain
        self.pos_embed_resample_at_load = pos_embed_resample_at_load
        # The grid of the pos_embed parameter: the pretraining checkpoint's (the reference), or
        # the training grid that MaskedViT sized it for.
        self.pos_embed_grid = self.grid_size if pos_embed_resample_at_load else (
            pretrain[0] // patch_size, pretrain[1] // patch_size)
        if self.pos_embed_grid != self.grid_size:
            self.pos_embed = nn.Parameter(
                sincos_2d_position_embedding(self.pos_embed_grid, self.embed_dims),
                requires_grad=pos_embed_trainable)
        self.pad_patch_remainder = pad_patch_remainder
        self.pad_to_img_size = pad_to_img_size
        self.crop_to_input = crop_to_input
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
            use_rel_pos=self.use_rel_pos, rel_pos_grid=self.grid_size,
            mask_padded_keys=self.mask_padded_keys)

    def position_table_grid(self) -> Tuple[Tuple[int, int], str]:
        """The grid of ``pos_embed`` (what a checkpoint's table is resampled to at load time)
        and the config fields that set it."""
        if self.pos_embed_resample_at_load:
            return super().position_table_grid()
        size = self.pretrain_img_size
        return tuple(self.pos_embed_grid), (
            f'model.backbone.pretrain_img_size={size[0] if size[0] == size[1] else size}, '
            f'patch_size={self.patch_size}')

    def position_embedding(self, grid_size: Tuple[int, int]) -> torch.Tensor:
        """The (1, 1+L, D) table interpolated from its grid (``pos_embed_grid``) to ``grid_size``
        (bicubic, ``align_corners=False``, the cls row kept as it is); the parameter itself when
        the grids agree. The first interpolation of this module is logged (one line naming the
        config fields of the table's grid); later ones are not."""
        grid_size = tuple(grid_size)
        if grid_size != tuple(self.pos_embed_grid) and not self._resampling_logged:
            self._resampling_logged = True
            grid, fields = self.position_table_grid()
            MMLogger.get_current_instance().info(
                f'{type(self).__name__}: position table resampled from its {grid[0]} x '
                f'{grid[1]} grid ({fields}) to {grid_size[0]} x {grid_size[1]} for inputs of '
                f'{grid_size[0] * self.patch_size} x {grid_size[1] * self.patch_size} px, in '
                'every forward pass; logged once, not at every resampling')
        return resize_pos_embed(self.pos_embed, self.pos_embed_grid, grid_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps of the blocks in ``out_indices``.

        Args:
            x (Tensor): Images (N, C, H, W) of any size of at least one patch: the patch
                convolution drops the bottom/right remainder of sides that are not a multiple
                of ``patch_size`` (``pad_patch_remainder``: zero-pads them instead); inputs
                smaller than ``img_size`` are zero-padded to it with ``pad_to_img_size``; the
                position table is interpolated to the grid; windows are padded.

        Returns:
            tuple[Tensor]: One (N, embed_dims, H', W') map per entry of ``out_indices``, in that
            order: the grid of the (padded) input, ``H // p`` (``ceil(H / p)`` with
            ``pad_patch_remainder``; ``img_size / p`` when ``pad_to_img_size`` pads, unless
            ``crop_to_input``).
        """
        height, width = x.shape[-2:]
        patch = self.patch_size
        if self.pad_patch_remainder:
            out_grid = (-(-height // patch), -(-width // patch))
            pad_h, pad_w = (-height) % patch, (-width) % patch
        else:
            if height < patch or width < patch:
                raise ValueError(f'input of {height} x {width} px is smaller than one patch '
                                 f'(patch_size={patch}): use larger images, or set '
                                 'model.backbone.pad_patch_remainder=True')
            out_grid, pad_h, pad_w = (height // patch, width // patch), 0, 0
        if self.pad_to_img_size:
            pad_h = max(pad_h, self.img_size[0] - height)
            pad_w = max(pad_w, self.img_size[1] - width)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        # The convolution alone: it drops what remains of a side past its last whole patch.
        tokens = self.patch_embed.proj(x).permute(0, 2, 3, 1)  # (N, H/p, W/p, D)
        grid = tuple(tokens.shape[1:3])
        pos = self.position_embedding(grid)[:, 1:].reshape(1, grid[0], grid[1], -1)
        tokens = tokens + pos
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        maps = {}
        for i, block in enumerate(self.blocks):
            tokens = checkpoint(block, tokens, use_reentrant=False) if use_cp else block(tokens)
            if i in self.out_indices:
                out = self.norm(tokens) if self.final_norm and i == self.num_layers - 1 \
                    else tokens
                if self.crop_to_input:
                    out = out[:, :out_grid[0], :out_grid[1]]
                maps[i] = out.permute(0, 3, 1, 2).contiguous()
        return tuple(maps[i] for i in self.out_indices)
