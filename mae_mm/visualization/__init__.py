"""Reconstruction figures."""
from .reconstruction import (draw_reconstructions, load_images_for_model,
                             reconstruction_panels, save_reconstruction_figure, to_uint8_images)

__all__ = [
    'draw_reconstructions', 'load_images_for_model', 'reconstruction_panels',
    'save_reconstruction_figure', 'to_uint8_images'
]
