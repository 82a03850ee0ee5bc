"""The pure-Python recipes under ``mae_mm/configs`` (what an installed mae-mm offers for
inheritance: ``with read_base(): from mae_mm.configs.<...> import *``) resolve to the same
config as their text twins under ``configs/`` and ``projects/*/configs``.

Both are loaded with mmengine's ``Config.fromfile``. The text config names its modules by
registry strings (``'MaskedViT'`` in scope ``mae_mm``, ``'mmpretrain.PackInputs'``, ``'Resize'``
in scope ``mmdet``...), the pure-Python one by the classes themselves; the normaliser below
resolves each string through the OpenMMLab registries, in the scope it is built in (the
``_scope_`` of an enclosing dict, else the config's ``default_scope``), to its class, and writes
every class as ``package.Name``. A string that names no registered module (``type='nms'``,
``'RoIAlign'``: read by name by mmcv/mmdet) is compared as it is. Everything else, every value
and every intermediate variable, must be equal: a hyper-parameter changed in one tree only fails
here.
"""
import importlib
import os.path as osp
import shutil
from typing import Any, Dict, List

import pytest
from mmengine.config import Config, ConfigDict
from mmengine.registry import Registry

from ..conftest import REPO_ROOT

PACKAGE_CONFIGS = osp.join(REPO_ROOT, 'mae_mm', 'configs')

# (pure-Python config under mae_mm/configs, its text twin)
PAIRS = [
    ('mae/mae_vit_base_p16_8xb512_amp_coslr_1600e_in1k.py',
     'configs/mae/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k.py'),
    ('mae/mae_vit_large_p16_8xb512_amp_coslr_1600e_in1k.py',
     'configs/mae/mae_vit-large-p16_8xb512-amp-coslr-1600e_in1k.py'),
    ('mae/mae_vit_huge_p14_8xb512_amp_coslr_1600e_in1k.py',
     'configs/mae/mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k.py'),
    ('finetune/vit_base_p16_8xb128_amp_coslr_100e_in1k.py',
     'configs/finetune/vit-base-p16_8xb128-amp-coslr-100e_in1k.py'),
    ('linear_probe/vit_base_p16_8xb2048_amp_lars_coslr_90e_in1k.py',
     'configs/linear_probe/vit-base-p16_8xb2048-amp-lars-coslr-90e_in1k.py'),
    ('vitdet/vitdet_mask_rcnn_vit_b_lsj_100e_coco.py',
     'projects/vitdet/configs/vitdet_mask-rcnn_vit-b_lsj-100e_coco.py'),
    ('upernet/upernet_vit_b_8xb2_160k_ade20k_512x512.py',
     'projects/upernet/configs/upernet_vit-b_8xb2-160k_ade20k-512x512.py'),
    ('upernet/upernet_vit_b_mae_paper_relpos_bias_8xb2_100e_ade20k_512x512.py',
     'projects/upernet/configs/upernet_vit-b_mae-paper-relpos-bias_8xb2-100e_ade20k-512x512.py'),
]

# Keys a text config needs and a pure-Python one does not: ``custom_imports`` imports mae-mm's
# modules so that their registry strings resolve; a pure-Python config imports the classes.
TEXT_ONLY_KEYS = {'custom_imports'}
TYPE_KEYS = ('type', 'constructor', 'runner_type', 'dataset_type')
REGISTRY_MODULES = ('mmengine.registry', 'mmpretrain.registry', 'mmdet.registry',
                    'mmseg.registry', 'mae_mm.registry')


def _registries() -> List[Registry]:
    found = {}
    for name in REGISTRY_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, Registry):
                found[id(value)] = value
    return list(found.values())


def _class_name(obj: Any) -> str:
    return f'{obj.__module__.split(".")[0]}.{obj.__qualname__}'


def _resolve(name: str, scope: str, registries: List[Registry]) -> str:
    """``package.Name`` of the module a registry string builds in ``scope``; the string itself
    when no registry knows it."""
    if '.' in name:
        scope, name = name.split('.', 1)
    hits = {id(obj): obj for obj in (r.get(name) for r in registries if r.scope == scope)
            if obj is not None}
    if not hits:  # a registry without a child in this scope builds in its own (BATCH_AUGMENTS)
        hits = {id(obj): obj for obj in (r.get(name) for r in registries) if obj is not None}
    if not hits:
        return name
    assert len(hits) == 1, f'{scope}.{name} is ambiguous: {sorted(map(_class_name, hits.values()))}'
    return _class_name(next(iter(hits.values())))


def normalise(value: Any, scope: str, registries: List[Registry]) -> Any:
    """Plain dicts/lists, every module type as ``package.Name`` (see the module docstring)."""
    if isinstance(value, dict):
        items = value.items()  # ConfigDict.items() builds a pure-Python config's lazy imports
        outer, scope = scope, value.get('_scope_', scope)
        out = {}
        for key, item in items:
            if key == '_scope_' and item == outer:  # mmengine's mark of a `pkg::` base
                continue
            if key in TYPE_KEYS:
                out[key] = (_resolve(item, scope, registries) if isinstance(item, str) else
                            _class_name(item))
            else:
                out[key] = normalise(item, scope, registries)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(normalise(item, scope, registries) for item in value)
    return value


def _load(path: str) -> Dict[str, Any]:
    cfg = Config.fromfile(path)
    plain = {k: v for k, v in cfg._cfg_dict.items()
             if k not in getattr(cfg, '_imported_names', ())}
    return normalise(ConfigDict(plain), plain.get('default_scope', 'mmengine'), _registries())


def differences(a: Any, b: Any, path: str = '') -> List[str]:
    """Where two normalised configs differ, as ``path: a != b`` lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b), key=str):
            where = f'{path}.{key}' if path else str(key)
            if key not in a or key not in b:
                found.append(f'{where}: only in the {"text" if key in b else "pure-Python"} '
                             'config')
            else:
                found += differences(a[key], b[key], where)
        return found
    if (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
            and type(a) is type(b) and len(a) == len(b)):
        return [line for i, (x, y) in enumerate(zip(a, b))
                for line in differences(x, y, f'{path}[{i}]')]
    return [] if a == b and type(a) is type(b) else [f'{path}: {a!r} != {b!r}']


@pytest.mark.parametrize('pure,text', PAIRS, ids=[p for p, _ in PAIRS])
def test_pure_python_config_equals_its_text_twin(pure, text):
    pure_cfg = _load(osp.join(PACKAGE_CONFIGS, pure))
    text_cfg = {k: v for k, v in _load(osp.join(REPO_ROOT, text)).items()
                if k not in TEXT_ONLY_KEYS}
    assert differences(pure_cfg, text_cfg) == [], f'{pure} and {text} differ'


def test_every_packaged_recipe_has_a_twin():
    """A recipe added under mae_mm/configs (not a _base_ file) is compared here too."""
    import glob
    recipes = {osp.relpath(p, PACKAGE_CONFIGS)
               for p in glob.glob(osp.join(PACKAGE_CONFIGS, '*', '*.py'))
               if not osp.basename(osp.dirname(p)).startswith('_')
               and not osp.basename(p).startswith('_')}
    assert recipes == {pure for pure, _ in PAIRS}


def test_a_hyper_parameter_changed_in_one_tree_is_caught(tmp_path):
    """The comparison fails when one value of a shared base file changes in the package only
    (the guard above can fail)."""
    copy = tmp_path / 'configs'
    shutil.copytree(PACKAGE_CONFIGS, copy)
    schedule = copy / '_base_' / 'schedules' / 'adamw_coslr_pretrain.py'
    source = schedule.read_text()
    assert 'weight_decay=0.05' in source
    schedule.write_text(source.replace('weight_decay=0.05', 'weight_decay=0.04'))
    pure, text = PAIRS[0]
    found = differences(_load(str(copy / pure)), _load(osp.join(REPO_ROOT, text)))
    assert found == ['optim_wrapper.optimizer.weight_decay: 0.04 != 0.05']


def test_the_normaliser_resolves_strings_and_classes_alike():
    from mmengine.dataset import DefaultSampler
    from mmpretrain.datasets.transforms import PackInputs

    from mae_mm.models import MaskedViT
    registries = _registries()
    text = normalise({'a': dict(type='MaskedViT'), 'b': dict(type='mmpretrain.PackInputs'),
                      'c': dict(type='DefaultSampler'), 'd': dict(type='nms')},
                     'mae_mm', registries)
    pure = normalise({'a': dict(type=MaskedViT), 'b': dict(type=PackInputs),
                      'c': dict(type=DefaultSampler), 'd': dict(type='nms')},
                     'mae_mm', registries)
    assert text == pure == {'a': {'type': 'mae_mm.MaskedViT'},
                            'b': {'type': 'mmpretrain.PackInputs'},
                            'c': {'type': 'mmengine.DefaultSampler'}, 'd': {'type': 'nms'}}
    # the scope decides: 'Resize' is mmdet's in mmdet, mmseg's in mmseg
    assert normalise(dict(type='Resize'), 'mmdet', registries) == {'type': 'mmdet.Resize'}
    assert normalise(dict(type='Resize', _scope_='mmseg'), 'mmdet', registries) == {
        'type': 'mmseg.Resize', '_scope_': 'mmseg'}
