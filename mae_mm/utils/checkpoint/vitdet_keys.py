"""The checkpoints of the ViTDet reference detectors, and their keys in mae-mm.

Two formats, both read only (see :func:`vitdet_to_mae_mm`):

``mmdet_vitdet``
    mmdet's ``projects/ViTDet`` (``ViT`` backbone + ``SimpleFPN`` neck + Mask R-CNN heads), an
    MMEngine checkpoint ``{'meta', 'state_dict', ...}``. Backbone keys ``backbone.patch_embed.
    proj.*``, ``backbone.pos_embed`` (1, 1 + (pretrain_img_size / patch)^2, D) (the pretraining
    grid, with the cls position), ``backbone.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,
    mlp.fc2}.*`` and ``backbone.blocks.N.attn.rel_pos_{h,w}`` (2 * window - 1, head_dim) in
    windowed blocks, (2 * img_size / patch - 1, head_dim) in global ones: mae-mm's names already.
    No ``cls_token``, no final ``norm``. Neck: ``neck.fpn1.{0,3}`` (ConvTranspose2d) with
    ``neck.fpn1.1`` (LN2d) between them, ``neck.fpn2.0`` (ConvTranspose2d); ``fpn3`` (identity)
    and ``fpn4`` (max-pooling) have no parameters; per level i, ``neck.lateral_convs.i`` (1x1) and
    ``neck.fpn_convs.i`` (3x3), mmcv ``ConvModule``s: ``conv.weight`` (no bias with a norm) and
    the norm, which mmcv names ``norm_layer`` for that project's ``LN2d`` (a plain ``nn.Module``;
    ``ln`` for mmpretrain's ``LN2d``). The heads are mmdet's Mask R-CNN heads with ``LN2d`` in
    the ConvModules of the box and mask heads (``roi_head.*.norm_layer``).
``detectron2_vitdet``
    detectron2's ``projects/ViTDet`` (``SimpleFeaturePyramid`` wrapping ``ViT`` as
    ``backbone.net``): model-zoo ``.pkl`` files ``{'model': {key: numpy array}, '__author__':
    ...}`` and training ``.pth`` files ``{'model': sd, 'optimizer', 'scheduler', 'iteration'}``.
    ``backbone.net.*`` has the names above; ``backbone.net.blocks.N.residual.*`` (residual
    bottleneck blocks, ``residual_block_indexes``) has no counterpart. The pyramid is one
    ``nn.Sequential`` per level, ``backbone.simfp_K`` for stride 2^K: first the up/down-sampling
    layers (scale 4: ConvTranspose2d ``0``, LayerNorm ``1`` (channel-first, ``weight``/``bias``),
    GELU, ConvTranspose2d ``3``; scale 2: ConvTranspose2d ``0``; scale 1: none; scale 0.5:
    max-pooling), then two detectron2 ``Conv2d`` with their norm inside (``J.weight``,
    ``J.norm.{weight,bias}``, no bias with LN), 1x1 then 3x3. The top block (max-pooling) has no
    parameters. Heads: ``proposal_generator.rpn_head.*``, ``roi_heads.*``.

mae-mm's :class:`SimpleFeaturePyramid` has one ``nn.Sequential`` per level too,
``neck.stages.i`` (i = position in ``scale_factors``, finest first): the same sampling layers at
the same indices, then conv 1x1, LayerNorm2d, conv 3x3, LayerNorm2d as four entries. Tensors are
copied as they are (same shapes and layouts); the position table is not resampled here.
"""
import pickle
import re
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

VITDET_FORMATS = ('mmdet_vitdet', 'detectron2_vitdet')

#: Names of the ViTDet backbone's parameters (mmdet ``ViT``, detectron2 ``ViT``, mae-mm
#: ``ViTDetBackbone``: the same).
_BACKBONE_KEY = re.compile(
    r'^(patch_embed\.proj\.(weight|bias)|pos_embed|blocks\.\d+\.((norm1|norm2|attn\.qkv|attn\.proj'
    r'|mlp\.fc1|mlp\.fc2)\.(weight|bias)|attn\.rel_pos_[hw]))$')
_REL_POS = re.compile(r'^(backbone\.)?blocks\.\d+\.attn\.rel_pos_[hw]$')
_D2_SIGNATURE = re.compile(
    r'^backbone\.(net\.(patch_embed\.|blocks\.\d+\.|pos_embed$)|simfp_\d+\.)')
_MMDET_NECK_SIGNATURE = re.compile(r'^neck\.fpn[1-4]\.')
#: mmdet ``SimpleFPN``: the sampling layers of level i are ``fpn{i+1}``; its scales are fixed
#: (4, 2, 1, 0.5), so the 1x1 conv of level i sits after this many entries in mae-mm's stage.
_MMDET_SAMPLING_LAYERS = (4, 1, 0, 1)
_MMDET_NORMS = ('norm_layer', 'ln')  # mmcv's names of the project's LN2d / mmpretrain's LN2d

Kept = List[Tuple[str, str, torch.Tensor]]
Dropped = List[Tuple[str, str]]


def detect_vitdet_format(keys: Iterable[str]) -> Optional[str]:
    """``'detectron2_vitdet'``, ``'mmdet_vitdet'`` or None, from the key signature: detectron2's
    ``backbone.net.*`` / ``backbone.simfp_*``; mmdet's ``neck.fpn{1-4}.*`` (``SimpleFPN``), or
    relative-position tables without a ``cls_token`` (a ViTDet backbone alone; mae-mm's
    ``ViTDetBackbone`` keeps a cls token and its pyramid is ``neck.stages``)."""
    keys = list(keys)
    if any(_D2_SIGNATURE.match(k) for k in keys):
        return 'detectron2_vitdet'
    if any(_MMDET_NECK_SIGNATURE.match(k) for k in keys):
        return 'mmdet_vitdet'
    if any(_REL_POS.match(k) for k in keys) and not any(
            re.match(r'^(backbone\.)?cls_token$', k) or k.startswith('neck.stages.')
            for k in keys):
        return 'mmdet_vitdet'
    return None


def _backbone(key: str, bare: str, value, kept: Kept, dropped: Dropped, unknown: List[str]):
    if _BACKBONE_KEY.match(bare):
        kept.append((key, 'backbone.' + bare, value))
    elif re.match(r'^blocks\.\d+\.residual\.', bare):
        dropped.append((key, 'residual bottleneck block (detectron2 residual_block_indexes): no '
                        'counterpart in ViTDetBackbone'))
    else:
        unknown.append(key)
        kept.append((key, 'backbone.' + bare, value))


def _mmdet_to_mae_mm(state: Mapping[str, torch.Tensor]):
    kept: Kept = []
    dropped: Dropped = []
    unknown: List[str] = []
    notes: List[str] = []
    bare = not any(k.startswith(('backbone.', 'neck.', 'rpn_head.', 'roi_head.')) for k in state)
    renamed_norms = 0
    norms = '|'.join(_MMDET_NORMS)
    for key, value in state.items():
        if bare or key.startswith('backbone.'):
            _backbone(key, key if bare else key[len('backbone.'):], value, kept, dropped, unknown)
            continue
        m = re.match(r'^neck\.fpn([12])\.(\d+)\.(weight|bias)$', key)
        if m:
            kept.append((key, f'neck.stages.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}',
                         value))
            continue
        m = re.match(rf'^neck\.(lateral_convs|fpn_convs)\.(\d+)\.(conv|{norms})\.(weight|bias)$',
                     key)
        if m:
            kind, level, part, param = m.groups()
            level = int(level)
            if part == 'conv' and param == 'bias':
                dropped.append((key, 'conv bias of a SimpleFPN built without norm_cfg (mae-mm\'s '
                                'SimpleFeaturePyramid has LayerNorms and no conv bias)'))
                continue
            if level >= len(_MMDET_SAMPLING_LAYERS):
                unknown.append(key)
                kept.append((key, key, value))
                continue
            index = _MMDET_SAMPLING_LAYERS[level] + (0 if kind == 'lateral_convs' else 2) + (
                0 if part == 'conv' else 1)
            kept.append((key, f'neck.stages.{level}.{index}.{param}', value))
            continue
        if key.startswith(('rpn_head.', 'roi_head.')):
            new = re.sub(r'\.norm_layer\.(weight|bias)$', r'.ln.\1', key)
            renamed_norms += new != key
            kept.append((key, new, value))
            continue
        unknown.append(key)
        kept.append((key, key, value))
    if renamed_norms:
        notes.append(f'{renamed_norms} head norm keys renamed norm_layer -> ln: mmcv names the '
                     'ViTDet project\'s LN2d "norm_layer" and mmpretrain\'s LN2d (mae-mm\'s '
                     'configs, eps 1e-5 by default where the project\'s is 1e-6) "ln"; same '
                     'weight and bias')
    return kept, dropped, unknown, notes


def _d2_pyramid(keys: Iterable[str]) -> Dict[int, Tuple[int, Optional[int]]]:
    """``{K: (stage index, number of sampling layers)}`` of the ``backbone.simfp_K`` levels
    (None: a level without norms)."""
    levels: Dict[int, Optional[int]] = {}
    for key in keys:
        m = re.match(r'^backbone\.simfp_(\d+)\.(\d+)\.(norm\.)?', key)
        if m:
            level, first = int(m.group(1)), levels.get(int(m.group(1)))
            levels[level] = first
            if m.group(3):  # the first Conv2d with a norm ends the sampling layers
                levels[level] = int(m.group(2)) if first is None else min(first, int(m.group(2)))
    return {level: (rank, levels[level]) for rank, level in enumerate(sorted(levels))}


def _d2_to_mae_mm(state: Mapping[str, torch.Tensor]):
    kept: Kept = []
    dropped: Dropped = []
    unknown: List[str] = []
    notes: List[str] = []
    pyramid = _d2_pyramid(state)
    for key, value in state.items():
        if key.startswith('backbone.net.'):
            _backbone(key, key[len('backbone.net.'):], value, kept, dropped, unknown)
            continue
        m = re.match(r'^backbone\.simfp_(\d+)\.(\d+)\.(norm\.)?(weight|bias)$', key)
        if m:
            stage, sampling = pyramid[int(m.group(1))]
            index, is_norm, param = int(m.group(2)), bool(m.group(3)), m.group(4)
            if sampling is None:
                dropped.append((key, 'pyramid level built with norm="" (conv biases, no '
                                'LayerNorm): no counterpart in mae-mm\'s SimpleFeaturePyramid'))
            elif index < sampling:
                kept.append((key, f'neck.stages.{stage}.{index}.{param}', value))
            elif index in (sampling, sampling + 1) and (is_norm or param == 'weight'):
                new = sampling + 2 * (index - sampling) + is_norm
                kept.append((key, f'neck.stages.{stage}.{new}.{param}', value))
            else:
                unknown.append(key)
                kept.append((key, key, value))
            continue
        if key.startswith(('proposal_generator.', 'roi_heads.')):
            dropped.append((key, 'detectron2 RPN / RoI heads: their names and layouts are not '
                            'mmdet\'s, not converted (the mmdet heads keep their initialisation)'))
        elif key in ('pixel_mean', 'pixel_std'):
            dropped.append((key, 'input normalisation (model.data_preprocessor mean/std in mmdet)'))
        else:
            unknown.append(key)
            kept.append((key, key, value))
    if pyramid:
        notes.append('pyramid levels: ' + ', '.join(
            f'backbone.simfp_{level} (stride {2**level}) -> neck.stages.{stage}'
            for level, (stage, _) in sorted(pyramid.items())))
    return kept, dropped, unknown, notes


def vitdet_to_mae_mm(state: Mapping[str, torch.Tensor], source: str):
    """ViTDet reference names -> mae-mm names (``backbone.*`` of ``ViTDetBackbone``,
    ``neck.stages.*`` of ``SimpleFeaturePyramid``, mmdet heads kept).

    Args:
        state (Mapping): The unwrapped state dict.
        source (str): ``'mmdet_vitdet'`` or ``'detectron2_vitdet'``.

    Returns:
        tuple: ``(kept, dropped, notes)`` as the other conversions of :mod:`.conversion`:
        ``(src, dst, tensor)`` triples, ``(src, reason)`` pairs and strings.
    """
    if source == 'mmdet_vitdet':
        kept, dropped, unknown, notes = _mmdet_to_mae_mm(state)
    elif source == 'detectron2_vitdet':
        kept, dropped, unknown, notes = _d2_to_mae_mm(state)
    else:
        raise ValueError(f'unknown ViTDet format {source!r}: use one of {VITDET_FORMATS}')
    if unknown:
        from .key_report import group_keys
        notes.append(f'{len(unknown)} keys have no mae-mm counterpart and were kept unchanged '
                     '(a model loading them reports them): ' + ', '.join(group_keys(unknown)))
    notes.append('backbone.pos_embed copied as stored (the reference keeps the pretraining grid '
                 'and interpolates in the forward pass); the reference has no cls_token and no '
                 'final norm, which ViTDetBackbone keeps unused')
    return kept, dropped, notes


def vitdet_expected_keys(state: Mapping[str, Any]) -> List[str]:
    """The backbone keys a complete ViTDet reference backbone of this depth has (mae-mm names;
    ``rel_pos_{h,w}`` when some block has them), plus the ``neck.`` keys present."""
    blocks = sorted({int(m.group(1)) for m in map(re.compile(r'^backbone\.blocks\.(\d+)\.').match,
                                                   state) if m})
    params = ['norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias',
              'attn.proj.weight', 'attn.proj.bias', 'norm2.weight', 'norm2.bias',
              'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias']
    if any(_REL_POS.match(k) for k in state):
        params += ['attn.rel_pos_h', 'attn.rel_pos_w']
    out = ['backbone.patch_embed.proj.weight', 'backbone.patch_embed.proj.bias',
           'backbone.pos_embed']
    out += [f'backbone.blocks.{i}.{p}' for i in range(max(blocks) + 1 if blocks else 0)
            for p in params]
    return out + [k for k in state if not k.startswith('backbone.')]


# ------------------------------------------------------------------------------------------------
# detectron2 model-zoo .pkl files
# ------------------------------------------------------------------------------------------------
#: What a detectron2 model-zoo pickle may reference: numpy arrays and their dtypes.
_NUMPY_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy', 'ndarray'), ('numpy', 'dtype'), ('collections', 'OrderedDict'),
}


class _NumpyUnpickler(pickle.Unpickler):

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS or (module.startswith('numpy.dtypes')
                                                and name.endswith('DType')):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'global {module}.{name} is not allowed')


def _to_tensors(state: Mapping) -> 'OrderedDict[str, Any]':
    import numpy as np
    return OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray)
                        else v) for k, v in state.items())


def read_detectron2_pickle(path: str) -> dict:
    """A detectron2 ``.pkl`` model file (``{'model': {key: numpy array}, '__author__': ...}``)
    with its arrays as tensors; read with an unpickler that allows numpy arrays only (any
    pickle when ``MAE_MM_TRUSTED_CHECKPOINTS=1``).

    Raises:
        UnsafeCheckpointError: The file pickles other types (one line).
        CheckpointLoadError: Not a readable pickle (one line).
    """
    from mae_mm.utils.compat import (CheckpointLoadError, UnsafeCheckpointError,
                                     trusted_by_environment)
    try:
        with open(path, 'rb') as f:
            if trusted_by_environment():
                data = pickle.load(f, encoding='latin1')  # noqa: S301 (trusted by the user)
            else:
                data = _NumpyUnpickler(f, encoding='latin1').load()
    except pickle.UnpicklingError as err:
        if 'is not allowed' in str(err):
            raise UnsafeCheckpointError(
                f'cannot load {path!r}: it pickles {str(err).split(" is not")[0][7:]}, not only '
                'numpy arrays; if you trust the file, set MAE_MM_TRUSTED_CHECKPOINTS=1') from None
        raise CheckpointLoadError(f'cannot load {path!r}: not a readable pickle ({err})') from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError) as err:
        raise CheckpointLoadError(f'cannot load {path!r}: the file is truncated or not a '
                                  f'detectron2 model file ({type(err).__name__}: {err})') from None
    if not isinstance(data, Mapping):
        raise CheckpointLoadError(f'cannot load {path!r}: it holds a {type(data).__name__}, not '
                                  'a detectron2 model file ({"model": {...}})')
    data = dict(data)
    if isinstance(data.get('model'), Mapping):
        data['model'] = _to_tensors(data['model'])
        return data
    return _to_tensors(data)
