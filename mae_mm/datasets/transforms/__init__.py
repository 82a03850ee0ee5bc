"""Data transforms of mae-mm (registered in ``mae_mm.registry.TRANSFORMS``)."""
from .fast_random_resized_crop import FastRandomResizedCrop
from .loading import (LoadImageSafe, jpeg_is_truncated, reset_skipped_image_count,
                      skipped_image_count)

__all__ = ['FastRandomResizedCrop', 'LoadImageSafe', 'jpeg_is_truncated', 'skipped_image_count',
           'reset_skipped_image_count']
