"""SimpleFeaturePyramid: ViTDet's pyramid built from the single map of a plain ViT."""
import math
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mae_mm.registry import MODELS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W) maps (built directly, never by registry name,
    so that it is the same module in every OpenMMLab scope)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _power_of_two_exponent(scale: float) -> int:
    """``k`` with ``scale == 2 ** k``; raises for other scales."""
    exponent = math.log2(scale) if scale > 0 else float('nan')
    if not math.isfinite(exponent) or exponent != round(exponent):
        raise ValueError(f'scale_factors entry {scale} is not a power of two (use e.g. '
                         '4.0, 2.0, 1.0, 0.5)')
    return int(round(exponent))


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Multi-scale maps from one stride-``s`` map (Li et al., 2022, "simple feature pyramid").

    For each ``scale_factors`` entry ``2**k``: ``k > 0`` transposed 2x2 convolutions (each halving
    the channels, with LayerNorm + GELU between them), or a ``2**-k`` max-pooling for ``k < 0``;
    then a 1x1 and a 3x3 convolution to ``out_channels``, each followed by a channel LayerNorm.
    Levels beyond the scales (``num_outs``) subsample the coarsest map by 2 (stride-2 max-pooling
    with kernel 1, like FPN's P6). With a stride-16 ViT and the default scales, the outputs have
    strides 4, 8, 16, 32 (and 64), what mmdet's Mask R-CNN heads expect.

    Args:
        in_channels (int): Channels of the backbone map (the ViT width).
        out_channels (int): Channels of every output.
        scale_factors (Sequence[float]): Decreasing powers of two.
        num_outs (int): Number of outputs, at least ``len(scale_factors)``.
        norm_eps (float): LayerNorm epsilon.
        init_cfg (dict, optional): MMEngine init config; by default the 1x1/3x3 convolutions get
            Kaiming-normal (fan-out) weights at construction.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 num_outs: int = 5,
                 norm_eps: float = 1e-6,
                 init_cfg: Union[dict, None] = None):
        super().__init__(init_cfg=init_cfg)
        exponents = [_power_of_two_exponent(s) for s in scale_factors]
        if not exponents or any(a <= b for a, b in zip(exponents, exponents[1:])):
            raise ValueError(f'scale_factors={tuple(scale_factors)} must be non-empty and '
                             'strictly decreasing (finest level first), e.g. (4.0, 2.0, 1.0, 0.5)')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs={num_outs} must be >= len(scale_factors)='
                             f'{len(scale_factors)}')
        if max(exponents) > 0 and in_channels % 2**max(exponents):
            raise ValueError(f'in_channels={in_channels} must be divisible by '
                             f'{2**max(exponents)} (channels halve at each 2x upsampling)')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.num_outs = num_outs
        self.stages = nn.ModuleList(
            self._build_stage(k, in_channels, out_channels, norm_eps) for k in exponents)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')

    @staticmethod
    def _build_stage(exponent: int, in_channels: int, out_channels: int,
                     norm_eps: float) -> nn.Sequential:
        layers, channels = [], in_channels
        for step in range(max(exponent, 0)):
            if step:
                layers += [LayerNorm2d(channels, eps=norm_eps), nn.GELU()]
            layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
            channels //= 2
        if exponent < 0:
            layers.append(nn.MaxPool2d(kernel_size=2**-exponent, stride=2**-exponent))
        layers += [
            nn.Conv2d(channels, out_channels, kernel_size=1, bias=False),
            LayerNorm2d(out_channels, eps=norm_eps),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_channels, eps=norm_eps),
        ]
        return nn.Sequential(*layers)

    def forward(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]]
                ) -> Tuple[torch.Tensor, ...]:
        """The pyramid of the last (or only) backbone map.

        Args:
            inputs (Tensor | Sequence[Tensor]): A (N, in_channels, H, W) map, or the backbone's
                tuple of maps (the last one is used).

        Returns:
            tuple[Tensor]: ``num_outs`` maps (N, out_channels, ., .), finest first.
        """
        x = inputs if isinstance(inputs, torch.Tensor) else inputs[-1]
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SimpleFeaturePyramid expects (N, {self.in_channels}, H, W) maps, '
                             f'got shape {tuple(x.shape)}: set neck.in_channels to the backbone '
                             'width')
        outs = [stage(x) for stage in self.stages]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
