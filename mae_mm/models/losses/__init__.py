from .normalized_pixel_loss import NormalizedPixelLoss

__all__ = ['NormalizedPixelLoss']
