"""MAE checkpoints: formats and their detection (:mod:`.formats`), conversion between them
(:mod:`.conversion`), key-mismatch reports (:mod:`.key_report`) and atomic writing
(:mod:`.saving`). Every reading goes through :func:`mae_mm.utils.compat.load_checkpoint_file`
(safe unpickler, one-line :class:`~mae_mm.utils.compat.CheckpointLoadError` for damaged files).
"""
from .conversion import (ConversionResult, convert_state_dict, load_backbone_state_dict,
                         mae_mm_to_official, mmpretrain_to_mae_mm, official_to_mae_mm)
from .formats import (FORMATS, TARGET_FORMATS, detect_format, expected_keys, sincos_orientation,
                      unwrap_state_dict)
from .key_report import KeyMismatch, group_keys, report_key_mismatch, split_key_mismatch
from .saving import mae_mm_checkpoint, save_checkpoint_atomic

__all__ = [
    'FORMATS', 'TARGET_FORMATS', 'ConversionResult', 'KeyMismatch', 'convert_state_dict',
    'detect_format', 'expected_keys', 'group_keys', 'load_backbone_state_dict',
    'mae_mm_checkpoint', 'mae_mm_to_official', 'mmpretrain_to_mae_mm', 'official_to_mae_mm',
    'report_key_mismatch', 'save_checkpoint_atomic', 'sincos_orientation', 'split_key_mismatch',
    'unwrap_state_dict'
]
