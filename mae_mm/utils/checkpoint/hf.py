"""Reading Hugging Face ``ViTMAE`` checkpoints: folders, ``model.safetensors``, ``config.json``.

A Hugging Face model folder (what ``save_pretrained`` writes, or a Hub snapshot such as
``facebook/vit-mae-base``) holds ``config.json`` and the weights as ``model.safetensors`` or
``pytorch_model.bin``. :func:`read_checkpoint` is what every mae-mm reader uses: it takes such a
folder, a ``.safetensors`` file or any file torch saved, and returns a checkpoint dict. For
Hugging Face weights it is ``{'state_dict': sd, 'meta': {'hf_config': ..., 'hf_files': ...}}``,
with the ``config.json`` found beside the weights (None when there is none).

The config matters beyond the sizes: Hugging Face ViTMAE LayerNorms use ``layer_norm_eps``
(1e-12 in ``ViTMAEConfig`` and in ``facebook/vit-mae-*``), MAE's use 1e-6. :func:`norm_eps_note`
words the one-line notice that loaders log when the two differ.

``safetensors`` is an optional dependency: reading a ``.safetensors`` file without it is a
one-line :class:`ImportError` naming ``pip install safetensors``.
"""
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Mapping, Optional, Tuple, Union

import torch

from ..compat import load_checkpoint_file
from .formats import detect_format, unwrap_state_dict
from .vitdet_keys import read_detectron2_pickle

#: Weight files of a Hugging Face model folder, in the order they are looked for.
HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
HF_CONFIG_FILE = 'config.json'
HF_PREPROCESSOR_FILE = 'preprocessor_config.json'
#: ``layer_norm_eps`` of transformers' ``ViTMAEConfig`` (and of ``facebook/vit-mae-*``).
HF_DEFAULT_LAYER_NORM_EPS = 1e-12
#: Key of the state dict's ``_metadata`` root entry that carries the config to load hooks.
METADATA_KEY = 'hf_config'


def hf_weight_file(folder: str) -> str:
    """The weight file of a Hugging Face model folder.

    Raises:
        FileNotFoundError: The folder has none of :data:`HF_WEIGHT_FILES` (one line).
    """
    for name in HF_WEIGHT_FILES:
        if osp.isfile(osp.join(folder, name)):
            return osp.join(folder, name)
    sharded = [n for n in HF_WEIGHT_FILES if osp.isfile(osp.join(folder, n + '.index.json'))]
    if sharded:
        raise FileNotFoundError(f'{folder!r} holds sharded weights ({sharded[0]}.index.json), '
                                'which mae-mm does not read: save the model as one file '
                                '(save_pretrained(..., max_shard_size="100GB"))')
    present = sorted(os.listdir(folder))[:8]
    raise FileNotFoundError(f'checkpoint folder {folder!r} holds no weights: expected '
                            f'{" or ".join(HF_WEIGHT_FILES)} (a Hugging Face model folder); it '
                            f'has {present}')


def read_json(path: str) -> Optional[dict]:
    """A JSON object from ``path``, None when the file does not exist.

    Raises:
        ValueError: The file is not a JSON object (one line).
    """
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f'cannot read {path!r}: {err}') from None
    if not isinstance(data, dict):
        raise ValueError(f'{path!r} is not a JSON object')
    return data


def load_safetensors(path: str, map_location: Any = 'cpu') -> 'OrderedDict[str, torch.Tensor]':
    """The tensors of a ``.safetensors`` file (the optional ``safetensors`` package).

    Raises:
        ImportError: safetensors is not installed (one line naming the install command).
        CheckpointLoadError: The file is not a readable safetensors file.
    """
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(f'reading {path!r} needs the safetensors package: pip install '
                          'safetensors (or give the pytorch_model.bin of the same model)') \
            from None
    from ..compat import CheckpointLoadError
    device = map_location if isinstance(map_location, str) else 'cpu'
    try:
        return OrderedDict(load_file(path, device=device))
    except Exception as err:  # safetensors raises its own SafetensorError for damaged files
        raise CheckpointLoadError(f'cannot load checkpoint {path!r}: not a readable safetensors '
                                  f'file ({str(err).strip().splitlines()[0][:200]})') from None


def hf_files(path: Union[str, os.PathLike]) -> Tuple[str, Optional[str]]:
    """``(weight file, config.json or None)`` for a folder or a weight file."""
    path = os.fspath(path)
    if osp.isdir(path):
        weights = hf_weight_file(path)
    else:
        weights = path
    config = osp.join(osp.dirname(osp.abspath(weights)), HF_CONFIG_FILE)
    return weights, (config if osp.isfile(config) else None)


def read_checkpoint(path: Union[str, os.PathLike], map_location: Any = 'cpu') -> dict:
    """Read any checkpoint mae-mm understands, from a file or a Hugging Face model folder.

    - a folder: its ``model.safetensors`` or ``pytorch_model.bin`` with its ``config.json``;
    - a ``.safetensors`` file (needs ``safetensors``);
    - a ``.pkl`` file: a detectron2 model file, numpy arrays only
      (:func:`.vitdet_keys.read_detectron2_pickle`), the arrays as tensors;
    - any other file: :func:`mae_mm.utils.compat.load_checkpoint_file` (safe unpickler).

    Hugging Face weights (:func:`detect_format` ``'hf'``) come back as ``{'state_dict': sd,
    'meta': {'hf_config': <config.json or None>, 'hf_preprocessor': <preprocessor_config.json
    or None>, 'hf_files': [...]}}``; the config also rides on ``sd._metadata`` (root entry
    ``'hf_config'``) so that a model's load hooks see it. Other files come back as loaded.

    Raises:
        FileNotFoundError: No such file, or a folder without weights (one line).
        ImportError: A ``.safetensors`` file without the safetensors package (one line).
        CheckpointLoadError: A damaged file.
    """
    path = os.fspath(path)
    if osp.isdir(path):
        weights, config_path = hf_files(path)
    else:
        weights, config_path = path, None
    if weights.endswith('.safetensors'):
        if not osp.isfile(weights):
            raise FileNotFoundError(f'checkpoint {weights!r} does not exist: check the path')
        checkpoint: Any = load_safetensors(weights, map_location)
    elif weights.endswith('.pkl'):  # detectron2 model files: pickled numpy arrays
        if not osp.isfile(weights):
            raise FileNotFoundError(f'checkpoint {weights!r} does not exist: check the path')
        checkpoint = read_detectron2_pickle(weights)
    else:
        checkpoint = load_checkpoint_file(weights, map_location=map_location)
    try:
        is_hf = detect_format(checkpoint) == 'hf'
    except (ValueError, TypeError):
        is_hf = False
    if not is_hf:
        return checkpoint
    if config_path is None:
        config_path = hf_files(weights)[1]
    state, _ = unwrap_state_dict(checkpoint)
    config = read_json(config_path) if config_path else None
    if config is not None and config.get('model_type', 'vit_mae') not in ('vit_mae', 'vit'):
        raise ValueError(f'{config_path!r} describes a {config.get("model_type")!r} model, not '
                         'a ViTMAE (model_type "vit_mae")')
    folder = osp.dirname(osp.abspath(weights))
    preprocessor = read_json(osp.join(folder, HF_PREPROCESSOR_FILE))
    state._metadata = OrderedDict([('', {METADATA_KEY: config})])
    return {'state_dict': state,
            'meta': {'hf_config': config, 'hf_preprocessor': preprocessor,
                     'hf_files': [weights] + ([config_path] if config_path else [])}}


def hf_config_of(checkpoint: Any) -> Optional[dict]:
    """The ``config.json`` that :func:`read_checkpoint` attached to a checkpoint (or to its
    state dict's ``_metadata``), else None."""
    if isinstance(checkpoint, Mapping):
        meta = checkpoint.get('meta')
        if isinstance(meta, Mapping) and isinstance(meta.get('hf_config'), Mapping):
            return dict(meta['hf_config'])
        metadata = getattr(checkpoint, '_metadata', None) or getattr(
            checkpoint.get('state_dict'), '_metadata', None)
        if isinstance(metadata, Mapping):
            root = metadata.get('', {})
            if isinstance(root, Mapping) and isinstance(root.get(METADATA_KEY), Mapping):
                return dict(root[METADATA_KEY])
    return None


def hf_layer_norm_eps(config: Optional[Mapping]) -> Tuple[float, str]:
    """``(eps, where it comes from)``: ``layer_norm_eps`` of a Hugging Face config, else
    transformers' default (1e-12), which is also what transformers uses then."""
    if config is None:
        return HF_DEFAULT_LAYER_NORM_EPS, ('no config.json beside it; transformers\' ViTMAE '
                                           'default layer_norm_eps is')
    if config.get('layer_norm_eps') is None:
        return HF_DEFAULT_LAYER_NORM_EPS, ('its config.json leaves layer_norm_eps at '
                                           'transformers\' default')
    return float(config['layer_norm_eps']), 'its config.json has layer_norm_eps'


def norm_eps_note(config: Optional[Mapping], model_eps: Mapping[str, float],
                  source: str = 'the checkpoint') -> Optional[str]:
    """One line when a Hugging Face checkpoint's LayerNorm eps differs from a model's.

    Args:
        config (Mapping | None): The checkpoint's ``config.json`` (None: not found beside it).
        model_eps (Mapping[str, float]): Config field -> the model's eps, e.g.
            ``{'model.backbone.norm_eps': 1e-6, 'model.neck.norm_eps': 1e-6}``.
        source (str): The checkpoint's name, for the line.

    Returns:
        str | None: The line, or None when every eps matches.
    """
    eps, where = hf_layer_norm_eps(config)
    fields = [name for name, value in model_eps.items()
              if value is not None and abs(float(value) - eps) > 1e-3 * eps]
    if not fields:
        return None
    current = ', '.join(dict.fromkeys(f'{float(model_eps[name]):g}' for name in fields))
    settings = ' '.join(f'{name}={eps:g}' for name in fields)
    return (f'{source} is a Hugging Face ViTMAE checkpoint ({where} {eps:g}) but this model\'s '
            f'LayerNorm eps is {current}: its outputs differ slightly from the checkpoint\'s; to '
            f'match them set {settings}')
