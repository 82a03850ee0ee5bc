"""Reconstruction figures, and MAE models rebuilt from checkpoints to draw them."""
from .mae_from_checkpoint import (build_mae_from_checkpoint, infer_mae_model_config,
                                  stored_config)
from .reconstruction import (NORM_PIX_NOTE, draw_reconstructions, load_images_for_model,
                             mask_noise, preprocessor_mean_std, reconstruct_with_seed,
                             reconstruction_figure_array, reconstruction_panels,
                             save_reconstruction_figure, to_uint8_images, unreadable_images)

__all__ = [
    'NORM_PIX_NOTE', 'build_mae_from_checkpoint', 'draw_reconstructions',
    'infer_mae_model_config', 'load_images_for_model', 'mask_noise', 'preprocessor_mean_std',
    'reconstruct_with_seed', 'reconstruction_figure_array', 'reconstruction_panels',
    'save_reconstruction_figure', 'stored_config', 'to_uint8_images', 'unreadable_images'
]
