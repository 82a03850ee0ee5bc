"""The plugin boundary: importing and using mae-mm changes nothing in its hosts, and the package's
own imports point down its layers without cycles.

The import graph is read from the source with ``ast`` (module-level and function-level imports
alike: an import moved into a function to dodge a cycle is still a dependency).
"""
import ast
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Set

from .conftest import REPO_ROOT

PACKAGE_DIR = osp.join(REPO_ROOT, 'mae_mm')

# Layers, lowest first: a module may import modules of its own layer or of lower ones only.
# ``version`` is a leaf of constants. ``registry`` names its modules by string (lazy locations).
LAYER_RANK = {
    'version': 0, 'utils': 0,
    'registry': 1,
    'models': 2, 'datasets': 2,
    'visualization': 3, 'evaluation': 3,
    'engine': 4,
    # pure-Python recipes (mae_mm/configs): data read by mmengine's config parser, never imported
    # by the package; they may name classes of every layer.
    'configs': 5,
}


def _module_name(path: str) -> str:
    rel = osp.relpath(path, REPO_ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _modules() -> Dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith('.py'):
                found[_module_name(osp.join(folder, name))] = osp.join(folder, name)
    return found


def _imported(module: str, is_package: bool, node: ast.AST, known: Set[str]) -> List[str]:
    """The mae_mm modules an import statement names (a ``from pkg import sub`` names ``sub``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split('.')[0] == 'mae_mm']
    base = node.module or ''
    if node.level:
        parts = module.split('.')
        if not is_package:
            parts = parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = '.'.join(parts + ([base] if base else []))
    if base.split('.')[0] != 'mae_mm':
        return []
    names = []
    for alias in node.names:
        sub = f'{base}.{alias.name}'
        if sub in known:
            names.append(sub)
        elif not _is_extension_module(sub):  # a compiled submodule is a leaf
            names.append(base)
    return names


def _is_extension_module(name: str) -> bool:
    folder = osp.join(REPO_ROOT, *name.split('.')[:-1])
    stem = name.split('.')[-1] + '.'
    return osp.isdir(folder) and any(f.startswith(stem) and f.endswith(('.so', '.pyd', '.c'))
                                     for f in os.listdir(folder))


def import_graph() -> Dict[str, Set[str]]:
    """``{module: {mae_mm modules it imports}}`` for every module of the package."""
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        deps = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(module, path.endswith('__init__.py'), node, modules):
                    while target not in modules and '.' in target:
                        target = target.rsplit('.', 1)[0]
                    if target in modules and target != module:
                        deps.add(target)
        graph[module] = deps
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _layer(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else 'mae_mm'


def test_the_graph_sees_relative_function_level_and_package_imports():
    """The graph is what the tests below judge, so check it on known edges first."""
    graph = import_graph()
    # relative import of a sibling module
    assert 'mae_mm.engine.checkpoint_files' in graph['mae_mm.engine.runner']
    # function-level import, absolute
    assert 'mae_mm.visualization' in graph[
        'mae_mm.engine.hooks.reconstruction_visualization_hook']
    # ``from ..pos_embed import name`` resolves to the module
    assert 'mae_mm.utils.pos_embed' in graph['mae_mm.utils.checkpoint.formats']
    # the cycle finder finds a planted cycle
    planted = {k: set(v) for k, v in graph.items()}
    planted['mae_mm.utils.compat'].add('mae_mm.engine.runner')
    assert any('mae_mm.utils.compat' in c and 'mae_mm.engine.runner' in c
               for c in _cycles(planted))


def test_no_import_cycle_in_the_package():
    assert _cycles(import_graph()) == []


def test_layers_point_down():
    """utils imports nothing of mae-mm (but the constant leaf ``version``); models and datasets
    only utils and the registry; visualization/evaluation no engine; nothing imports tools."""
    upward = []
    for module, deps in import_graph().items():
        layer = _layer(module)
        if layer not in LAYER_RANK:
            continue  # the package's own __init__
        for dep in deps:
            dep_layer = _layer(dep)
            if dep_layer != layer and LAYER_RANK.get(dep_layer, 99) > LAYER_RANK[layer]:
                upward.append(f'{module} -> {dep}')
            if layer == 'utils' and dep_layer not in ('utils', 'version'):
                upward.append(f'{module} -> {dep}')
    assert upward == []


# Run in a fresh interpreter: the test process has imported mae_mm long before.
_SNAPSHOT_SCRIPT = r'''
import importlib, json, pkgutil, sys, types

HOSTS = ('mmengine', 'mmcv', 'mmpretrain', 'mmdet', 'mmseg', 'torch')


def is_code(value):
    """Functions, classes, methods, modules: what a patch replaces. Data (counters, caches,
    instances in singleton tables, torch's restored allow-list set) is runtime state."""
    return callable(value) or isinstance(value, (types.ModuleType, property, staticmethod,
                                                 classmethod))


def is_profiler_hook(value):
    """torch.optim wraps an optimizer class's ``step`` in its profiler hook on first use."""
    return isinstance(value, types.FunctionType) and value.__dict__.get('hooked') is True


def ident(value):
    return id(value.__wrapped__) if is_profiler_hook(value) else id(value)


def snapshot():
    state = {}
    for name, module in list(sys.modules.items()):
        if not isinstance(module, types.ModuleType) or name.split('.')[0] not in HOSTS:
            continue
        entries = {}
        for attr, value in list(vars(module).items()):
            if not is_code(value):
                continue
            entries[attr] = ident(value)
            if isinstance(value, type) and value.__module__ == name:
                for key, member in list(vars(value).items()):
                    if is_code(member):
                        entries[f'{attr}.{key}'] = ident(member)
                    elif isinstance(member, dict):  # e.g. CheckpointLoader._schemes
                        for item, item_value in list(member.items()):
                            if is_code(item_value):
                                entries[f'{attr}.{key}[{item!r}]'] = ident(item_value)
        state[name] = entries
    return state


import mmengine.runner, mmengine.hooks, mmengine.logging, mmengine.registry, mmengine.model
import mmengine.optim, mmengine.dataset, mmengine.runner.checkpoint
import mmcv, mmcv.transforms, mmpretrain.models, mmpretrain.datasets
try:  # the downstream hosts (absent from the compatibility-matrix environments)
    import mmdet.models, mmseg.models
except ImportError:
    pass
import torch, torch.nn.functional, torch.serialization
from mmengine.logging import HistoryBuffer
HistoryBuffer()  # mmengine fills a class-level table of methods on first use: not our change
before = snapshot()

import mae_mm
imported = []
for info in pkgutil.walk_packages(mae_mm.__path__, 'mae_mm.'):
    importlib.import_module(info.name)
    imported.append(info.name)

# Build every registered module, and run the model once.
import torch
from mmengine.registry import init_default_scope
from mae_mm.registry import ALL_REGISTRIES, HOOKS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS, \
    OPTIM_WRAPPERS, TRANSFORMS
init_default_scope('mae_mm')
tiny = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
mae = MODELS.build(dict(type='MaskedAutoencoder',
                        backbone=dict(type='MaskedViT', arch=tiny, img_size=32, patch_size=8),
                        neck=dict(type='MAEDecoder', decoder_embed_dim=16, decoder_depth=1,
                                  decoder_num_heads=2),
                        head=dict(type='PixelReconstructionHead')))
mae.loss(torch.randn(2, 3, 32, 32))['loss'].backward()
built = {'MaskedAutoencoder', 'MaskedViT', 'MAEDecoder', 'PixelReconstructionHead',
         'NormalizedPixelLoss'}
for cfg in [dict(type='ViTDetBackbone', arch=tiny, img_size=32, patch_size=8, window_size=2,
                 global_attn_indexes=(1, )),
            dict(type='PartialFinetuneViT', arch=tiny, img_size=32, patch_size=8,
                 trainable_blocks=1),
            dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16)]:
    MODELS.build(cfg)
    built.add(cfg['type'])
for cfg in [dict(type='NonFiniteGuardHook'), dict(type='ExactResumeHook'),
            dict(type='ReconstructionVisualizationHook')]:
    HOOKS.build(cfg)
    built.add(cfg['type'])
for cfg in [dict(type='FastRandomResizedCrop', scale=32), dict(type='LoadImageSafe')]:
    TRANSFORMS.build(cfg)
    built.add(cfg['type'])
optim_wrapper = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
    type='LayerDecayOptimWrapperConstructor',
    optim_wrapper_cfg=dict(type='MixedPrecisionOptimWrapper',
                           optimizer=dict(type='AdamW', lr=1e-3)),
    paramwise_cfg=dict(layer_decay_rate=0.75)))(mae)
built |= {'LayerDecayOptimWrapperConstructor', 'MixedPrecisionOptimWrapper'}
OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
    type='FrozenAwareOptimWrapperConstructor', optim_wrapper_cfg=dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
    paramwise_cfg=dict(norm_decay_mult=0.0)))(mae)
built.add('FrozenAwareOptimWrapperConstructor')

# Datasets, and both runners: train, checkpoint, auto-resume (all of it under the snapshot).
import os, tempfile
import numpy as np
from PIL import Image
from mae_mm.registry import DATASETS
from mae_mm.engine import build_runner
from tests.conftest import tiny_pretrain_cfg
work = tempfile.mkdtemp()
os.makedirs(f'{work}/photos')
for i in range(8):
    pixels = np.random.default_rng(i).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(f'{work}/photos/{i}.jpg')
DATASETS.build(dict(type='ImageFolder', data_root=f'{work}/photos'))
DATASETS.build(dict(type='FashionMNIST', num_samples=20))
import tarfile
from mae_mm.datasets import index_shards
with tarfile.open(f'{work}/shard-000000.tar', 'w') as tar:
    tar.add(f'{work}/photos/0.jpg', arcname='0.jpg')
index_shards([f'{work}/shard-000000.tar'], f'{work}/index.json')
DATASETS.build(dict(type='WebDatasetShards', data_root=work,
                    pipeline=[dict(type='FastRandomResizedCrop', scale=32)]))[0]
built.add('WebDatasetShards')
built |= {'ImageFolder', 'FashionMNIST', 'ArrayImageDataset', 'MAEDataPreprocessor'}
for runner_type in ('mae_mm.MAERunner', 'mae_mm.MAEFlexibleRunner'):
    name = runner_type.split('.')[-1]
    for resume in (False, True):
        cfg = tiny_pretrain_cfg(f'{work}/photos', f'{work}/{name}', max_epochs=1 + resume,
                                batch_size=4, runner_type=runner_type, resume=resume)
        build_runner(cfg).train()
    assert os.path.isfile(f'{work}/{name}/epoch_2.pth')
    built.add(name)
registered = {name for registry in ALL_REGISTRIES for name in registry.module_dict}

after = snapshot()
changed = []
for module, entries in before.items():
    now = after.get(module, {})
    for key, ident in entries.items():
        if now.get(key) != ident:
            changed.append(f'{module}.{key}')
    for key in set(now) - set(entries):
        owner, _, member = key.partition('.')
        value = vars(sys.modules[module]).get(owner)
        if member and isinstance(value, type) and '[' not in member:
            value = vars(value).get(member)
        if isinstance(value, types.ModuleType) and not member:
            continue  # importing a submodule adds its name to the package
        if is_profiler_hook(value):
            continue
        changed.append(f'{module}.{key} (added)')
print(json.dumps(dict(changed=sorted(changed), imported=imported, built=sorted(built),
                      registered=sorted(registered), hosts=len(before))))
'''


def test_import_and_use_change_nothing_in_mmengine_mmcv_mmpretrain_mmdet_mmseg_torch(tmp_path):
    """Snapshot every attribute (and every class member, and every entry of a class-level dict)
    of every loaded module of the hosts; import every mae_mm module, build every registered
    module and train the model one step; nothing of the hosts has another identity after."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, '-c', _SNAPSHOT_SCRIPT], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['hosts'] > 500  # the snapshot covered the hosts' loaded modules
    assert len(result['imported']) > 40
    assert set(result['registered']) <= set(result['built']), \
        f'registered but not built here: {set(result["registered"]) - set(result["built"])}'
    assert result['changed'] == []


def test_the_snapshot_catches_a_patch(tmp_path):
    """The same snapshot, with one replaced mmengine function, reports it (the test above can
    fail)."""
    script = _SNAPSHOT_SCRIPT.replace(
        'import mae_mm\n',
        'import mae_mm\nimport mmengine.runner.checkpoint as c\n'
        'c.find_latest_checkpoint = lambda work_dir: None\n'
        "c.CheckpointLoader._schemes['x://'] = print\n", 1)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = json.loads(proc.stdout.strip().splitlines()[-1])['changed']
    assert 'mmengine.runner.checkpoint.find_latest_checkpoint' in changed
    assert "mmengine.runner.checkpoint.CheckpointLoader._schemes['x://'] (added)" in changed
