from .masked_vit import ARCH_ZOO, MaskedViT, resolve_arch
from .partial_finetune_vit import PartialFinetuneViT
from .vitdet_backbone import ViTDetBackbone

__all__ = ['ARCH_ZOO', 'MaskedViT', 'PartialFinetuneViT', 'resolve_arch', 'ViTDetBackbone']
