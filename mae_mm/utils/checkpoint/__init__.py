"""MAE checkpoints: formats and their detection (:mod:`.formats`), conversion between them
(:mod:`.conversion`), Hugging Face folders and ``config.json`` (:mod:`.hf`), key-mismatch reports
(:mod:`.key_report`), atomic writing (:mod:`.saving`) and the ViTDet reference detectors'
checkpoints (:mod:`.vitdet_keys`). Every reading goes through
:func:`read_checkpoint` (Hugging Face folders and ``.safetensors``) or
:func:`mae_mm.utils.compat.load_checkpoint_file` (safe unpickler, one-line
:class:`~mae_mm.utils.compat.CheckpointLoadError` for damaged files).
"""
from .conversion import (ConversionResult, convert_state_dict, hf_to_mae_mm,
                         load_backbone_state_dict, mae_mm_to_hf, mae_mm_to_official,
                         mmpretrain_to_mae_mm, official_to_mae_mm)
from .formats import (FORMATS, TARGET_FORMATS, detect_format, expected_keys, sincos_orientation,
                      unwrap_state_dict)
from .hf import (HF_DEFAULT_LAYER_NORM_EPS, hf_config_of, hf_layer_norm_eps, norm_eps_note,
                 read_checkpoint)
from .hf_keys import hf_key_to_official, official_key_to_hf
from .key_report import (KeyMismatch, PretrainedKeyMismatchError, group_keys, report_key_mismatch,
                         split_key_mismatch)
from .saving import mae_mm_checkpoint, save_checkpoint_atomic
from .vitdet_keys import (VITDET_FORMATS, detect_vitdet_format, read_detectron2_pickle,
                          vitdet_to_mae_mm)

__all__ = [
    'FORMATS', 'HF_DEFAULT_LAYER_NORM_EPS', 'TARGET_FORMATS', 'ConversionResult', 'KeyMismatch',
    'convert_state_dict', 'detect_format', 'expected_keys', 'group_keys', 'hf_config_of',
    'hf_key_to_official', 'hf_layer_norm_eps', 'hf_to_mae_mm', 'load_backbone_state_dict',
    'mae_mm_checkpoint', 'mae_mm_to_hf', 'mae_mm_to_official', 'mmpretrain_to_mae_mm',
    'PretrainedKeyMismatchError', 'norm_eps_note', 'official_key_to_hf', 'official_to_mae_mm',
    'read_checkpoint', 'report_key_mismatch', 'save_checkpoint_atomic', 'sincos_orientation',
    'split_key_mismatch', 'unwrap_state_dict', 'VITDET_FORMATS', 'detect_vitdet_format',
    'read_detectron2_pickle', 'vitdet_to_mae_mm'
]
