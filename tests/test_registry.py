"""mae_mm's registry scope, the pinned stack and the package version."""
import importlib
import importlib.metadata as metadata
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.registry import DefaultScope, init_default_scope

import mae_mm
from mae_mm import registry as mae_registry

from .conftest import REPO_ROOT, TINY_ARCH


@pytest.mark.parametrize('reg', mae_registry.ALL_REGISTRIES, ids=lambda r: r.name)
def test_every_registry_is_a_root_child_with_importable_locations(reg):
    assert reg.scope == 'mae_mm'
    assert reg.parent is not None and reg.parent.parent is None  # child of mmengine's root
    for location in reg._locations:
        importlib.import_module(location)
    reg.import_from_location()


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_reachable_by_prefix_from_other_scopes(scope):
    models = importlib.import_module(f'{scope}.registry').MODELS
    init_default_scope(scope)
    assert DefaultScope.get_current_instance().scope_name == scope
    backbone = models.build(dict(type='mae_mm.MaskedViT', arch=TINY_ARCH, img_size=32,
                                 patch_size=8, mask_ratio=0.0))
    assert type(backbone).__module__.startswith('mae_mm.')
    assert backbone(torch.randn(1, 3, 32, 32))[0].shape == (1, 17, 64)


def test_names_do_not_collide_with_upstream():
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    mae_registry.MODELS.import_from_location()
    ours = set(mae_registry.MODELS.module_dict)
    assert {'MaskedViT', 'MAEDecoder', 'PixelReconstructionHead', 'NormalizedPixelLoss',
            'MaskedAutoencoder'} <= ours
    PRETRAIN_MODELS.import_from_location()
    SEG_MODELS.import_from_location()
    assert not ours & (set(PRETRAIN_MODELS.module_dict) | set(SEG_MODELS.module_dict))


@pytest.mark.parametrize('module', ['mmcv.ops', 'mmdet.models', 'mmseg.models',
                                    'mmpretrain.models'])
def test_pinned_stack_imports(module):
    importlib.import_module(module)


def test_pinned_versions():
    expected = {}
    with open(osp.join(REPO_ROOT, 'requirements', 'env.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if '==' in line:
                name, version = line.split('==')
                expected[name] = version
    for name, version in expected.items():
        assert metadata.version(name).split('+')[0] == version, name
    assert metadata.version('mmcv') == '2.1.0'
    from mmcv.ops import nms  # a compiled op really runs
    boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_version_is_consistent():
    setup_version = subprocess.run([sys.executable, 'setup.py', '--version'], cwd=REPO_ROOT,
                                   capture_output=True, text=True, check=True).stdout.split()[-1]
    assert setup_version == mae_mm.__version__ == metadata.version('mae-mm')
    assert mae_mm.version_info[:3] == tuple(int(p) for p in mae_mm.__version__.split('.')[:3])
