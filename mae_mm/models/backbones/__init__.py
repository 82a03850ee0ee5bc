from .masked_vit import MaskedViT
from .partial_finetune_vit import PartialFinetuneViT
from .vit_arch import ARCH_ZOO, resolve_arch
from .vitdet_backbone import ViTDetBackbone

__all__ = ['ARCH_ZOO', 'MaskedViT', 'PartialFinetuneViT', 'resolve_arch', 'ViTDetBackbone']
