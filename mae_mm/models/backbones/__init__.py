from .masked_vit import ARCH_ZOO, MaskedViT, resolve_arch

__all__ = ['ARCH_ZOO', 'MaskedViT', 'resolve_arch']
