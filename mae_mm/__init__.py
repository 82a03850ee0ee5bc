"""mae-mm: Masked Autoencoders (He et al., 2021) as an OpenMMLab plugin.

Importing it registers mae-mm's modules in its own registry scope ``mae_mm`` and changes nothing
in mmengine, mmcv, mmpretrain, mmdet, mmseg or torch. Its crash-safe checkpointing is opt-in:
``runner_type = 'mae_mm.MAERunner'`` in a config (mae-mm's configs set it).
"""
from .version import __version__, version_info

__all__ = ['__version__', 'version_info']
