"""mae_mm.MAEDataPreprocessor gives mmpretrain.SelfSupDataPreprocessor's output, bit for bit, on
the same batches and config keys (mae-mm's pretraining configs use it instead of mmpretrain's so
that pretraining never imports mmpretrain.models; docs/installation.md)."""
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import default_collate
from mmengine.registry import MODELS as ROOT_MODELS

from mae_mm.models import MAEDataPreprocessor
from ..conftest import REPO_ROOT, tiny_mae_cfg

IMAGENET = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])


def _reference(**kwargs):
    """mmpretrain's SelfSupDataPreprocessor (skipped where mmpretrain.models cannot import, as
    next to transformers >= 4.57)."""
    try:
        from mmpretrain.models.utils.data_preprocessor import SelfSupDataPreprocessor
    except TypeError as err:  # pragma: no cover - only with transformers >= 4.57 installed
        pytest.skip(f'mmpretrain.models does not import here ({err}): no reference')
    return SelfSupDataPreprocessor(**kwargs)


def _images(*shape, seed=0, dtype=torch.uint8):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return images if dtype == torch.uint8 else images.to(dtype)


def _packed_batch(inputs, n):
    """What PackInputs + default_collate give: stacked inputs, a list of data samples."""
    from mmpretrain.structures import DataSample
    return {'inputs': inputs,
            'data_samples': [DataSample(metainfo=dict(sample_idx=i)) for i in range(n)]}


def _assert_same_output(ours, reference, batch):
    expected = reference(batch, training=True)
    got = ours(batch, training=True)
    assert set(got) == set(expected) == {'inputs', 'data_samples'}
    if isinstance(expected['inputs'], list):
        assert isinstance(got['inputs'], list) and len(got['inputs']) == len(expected['inputs'])
        pairs = list(zip(got['inputs'], expected['inputs']))
    else:
        assert isinstance(got['inputs'], torch.Tensor)
        pairs = [(got['inputs'], expected['inputs'])]
    for mine, theirs in pairs:
        assert mine.dtype == theirs.dtype == torch.float32
        assert mine.shape == theirs.shape
        assert torch.equal(mine, theirs)  # bit for bit
    assert [s.sample_idx for s in got['data_samples']] == \
        [s.sample_idx for s in expected['data_samples']]
    return got


CASES = {
    'imagenet-to_rgb': dict(IMAGENET, to_rgb=True),
    'imagenet-bgr': dict(IMAGENET, to_rgb=False),
    'bgr_to_rgb-key': dict(IMAGENET, bgr_to_rgb=True),
    'rgb_to_bgr-key': dict(IMAGENET, rgb_to_bgr=True),
    'no-normalisation-to_rgb': dict(to_rgb=True),
    'no-normalisation': dict(),
    'one-value-mean': dict(mean=[127.5], std=[64.0], to_rgb=True),
    'all-keys': dict(IMAGENET, pad_size_divisor=16, pad_value=3, to_rgb=True,
                     non_blocking=True),
}


@pytest.mark.parametrize('kwargs', list(CASES.values()), ids=list(CASES))
@pytest.mark.parametrize('dtype', [torch.uint8, torch.float32], ids=['uint8', 'float32'])
def test_same_output_as_mmpretrain_on_a_batch(kwargs, dtype):
    batch = _packed_batch(_images(4, 3, 20, 12, dtype=dtype), 4)
    got = _assert_same_output(MAEDataPreprocessor(**kwargs), _reference(**kwargs), batch)
    # As mmpretrain's, no padding to pad_size_divisor: default_collate stacked equal crops.
    assert got['inputs'].shape == (4, 3, 20, 12)


@pytest.mark.parametrize('to_rgb', [True, False])
def test_same_output_as_mmpretrain_on_a_list_of_uint8_views(to_rgb):
    """Multi-view pipelines: inputs is one (N, C, H, W) tensor per view; a list comes back."""
    views = [_images(3, 3, 16, 16, seed=1), _images(3, 3, 8, 8, seed=2)]
    got = _assert_same_output(MAEDataPreprocessor(**IMAGENET, to_rgb=to_rgb),
                              _reference(**IMAGENET, to_rgb=to_rgb), _packed_batch(views, 3))
    assert [tuple(v.shape) for v in got['inputs']] == [(3, 3, 16, 16), (3, 3, 8, 8)]


def test_same_output_as_mmpretrain_on_one_channel_images():
    kwargs = dict(mean=[72.94], std=[90.0], to_rgb=False)
    batch = _packed_batch(_images(5, 1, 12, 12, seed=3), 5)
    _assert_same_output(MAEDataPreprocessor(**kwargs), _reference(**kwargs), batch)


def test_to_rgb_leaves_one_channel_images_unswapped():
    """Nothing to swap in a grey image: mmpretrain's raises an IndexError there, ours gives the
    output without the swap."""
    batch = _packed_batch(_images(2, 1, 8, 8, seed=4), 2)
    with pytest.raises(IndexError):
        _reference(mean=[72.94], std=[90.0], to_rgb=True)(batch)
    swapped = MAEDataPreprocessor(mean=[72.94], std=[90.0], to_rgb=True)(batch)['inputs']
    plain = MAEDataPreprocessor(mean=[72.94], std=[90.0], to_rgb=False)(batch)['inputs']
    assert torch.equal(swapped, plain)
    grey = torch.tensor([72.94]).view(1, 1, 1, 1), torch.tensor([90.0]).view(1, 1, 1, 1)
    assert torch.equal(plain, (batch['inputs'].float() - grey[0]) / grey[1])


def test_rgb_conversion_reverses_channels_then_normalises():
    """Checked against a direct computation too, not only against mmpretrain."""
    images = _images(2, 3, 4, 4, seed=5)
    out = MAEDataPreprocessor(**IMAGENET, to_rgb=True)({'inputs': images})['inputs']
    mean = torch.tensor(IMAGENET['mean']).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET['std']).view(1, 3, 1, 1)
    assert torch.equal(out, (images[:, [2, 1, 0]].float() - mean) / std)


def test_pretraining_configs_preprocessor_equals_mmpretrain():
    """The preprocessor of the pretraining configs, built through the registry as the runner
    builds it, against mmpretrain's built from the same config with its type put back."""
    for config in ('configs/_base_/models/mae_vit-base-p16.py',
                   'configs/small_scale/mae_vit-mini-p4_fmnist-32px.py'):
        cfg = Config.fromfile(osp.join(REPO_ROOT, config)).model.data_preprocessor.to_dict()
        assert cfg['type'] == 'mae_mm.MAEDataPreprocessor', config
        ours = ROOT_MODELS.build(cfg)
        assert type(ours) is MAEDataPreprocessor
        kwargs = {k: v for k, v in cfg.items() if k != 'type'}
        batch = _packed_batch(_images(3, 3, 32, 32, seed=6), 3)
        _assert_same_output(ours, _reference(**kwargs), batch)


def _mmpretrain_types(node):
    """Names of every ``type='mmpretrain.X'`` in a config tree."""
    if isinstance(node, dict):
        kind = node.get('type')
        if isinstance(kind, str) and kind.startswith('mmpretrain.'):
            yield kind[len('mmpretrain.'):]
        for value in node.values():
            yield from _mmpretrain_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _mmpretrain_types(value)


def test_every_pretraining_config_uses_mae_mms_preprocessor():
    """Every MAE pretraining config under configs/ (paper recipes, aliases, ablations, quick
    start, small scale), as merged, builds mae-mm's preprocessor; none names mmpretrain's."""
    import glob
    import mmpretrain.datasets  # noqa: F401  (registers its transforms and datasets only)
    from mmpretrain.registry import DATASETS, TRANSFORMS
    pretraining, offenders, upstream = [], [], set()
    for path in sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '**', '*.py'), recursive=True)):
        name = osp.relpath(path, REPO_ROOT)
        with open(path, encoding='utf-8') as f:
            if re.search(r'''type\s*=\s*['"]mmpretrain\.SelfSupDataPreprocessor''', f.read()):
                offenders.append(name)
        if '_base_' in name.split(osp.sep) or osp.basename(path).startswith('_'):
            continue
        cfg = Config.fromfile(path)
        model = cfg.get('model', {})
        if model.get('type') == 'MaskedAutoencoder':
            pretraining.append(name)
            if model['data_preprocessor']['type'] != 'mae_mm.MAEDataPreprocessor':
                offenders.append(name)
            upstream |= set(_mmpretrain_types(cfg.to_dict()))
    assert offenders == []
    # Whatever else they take from mmpretrain lives in mmpretrain.datasets, which imports
    # without mmpretrain.models (transformers >= 4.57 breaks only the latter).
    assert upstream and all(t in TRANSFORMS.module_dict or t in DATASETS.module_dict
                            for t in upstream), sorted(upstream)
    folders = {name.split(osp.sep)[1] for name in pretraining}
    assert {'mae', 'ablations', 'quickstart', 'small_scale'} <= folders, folders
    assert len(pretraining) >= 40, pretraining


def test_a_packed_pipeline_batch_trains_masked_autoencoder():
    """PackInputs + default_collate -> MAEDataPreprocessor -> MaskedAutoencoder.train_step."""
    import numpy as np
    from mmengine.optim import OptimWrapper
    from mmpretrain.datasets.transforms import PackInputs
    rng = np.random.default_rng(0)
    samples = [PackInputs()(dict(img=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                                 sample_idx=i)) for i in range(4)]
    batch = default_collate(samples)
    assert batch['inputs'].dtype == torch.uint8 and batch['inputs'].shape == (4, 3, 32, 32)
    model = ROOT_MODELS.build(dict(tiny_mae_cfg(), data_preprocessor=dict(
        type='mae_mm.MAEDataPreprocessor', **IMAGENET, to_rgb=True)))
    assert type(model.data_preprocessor) is MAEDataPreprocessor
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    losses = model.train_step(batch, optim)
    assert torch.isfinite(losses['loss'])


def test_state_dict_unchanged():
    """mean/std are not saved, as with mmpretrain's: checkpoints keep the same keys."""
    assert list(MAEDataPreprocessor(**IMAGENET).state_dict()) == \
        list(_reference(**IMAGENET).state_dict()) == []


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(mean=[1.0, 2.0, 3.0]), ValueError, 'data_preprocessor.std is missing'),
    (dict(std=[1.0, 2.0, 3.0]), ValueError, 'data_preprocessor.mean is missing'),
    (dict(bgr_to_rgb=True, rgb_to_bgr=True), ValueError, 'set one'),
    (dict(pad_size_divisor=0), ValueError, 'pad_size_divisor=0'),
    (dict(mean=[], std=[]), ValueError, 'data_preprocessor.mean is empty'),
])
def test_bad_arguments_name_the_field(kwargs, error, words):
    with pytest.raises(error, match=words):
        MAEDataPreprocessor(**kwargs)


def test_bad_batches_name_the_fix():
    with pytest.raises(ValueError, match='data_preprocessor.mean has 2 values for 3-channel'):
        MAEDataPreprocessor(mean=[1.0, 2.0], std=[1.0])({'inputs': _images(1, 3, 4, 4)})
    with pytest.raises(TypeError, match="collate_fn=dict\\(type='default_collate'\\)"):
        MAEDataPreprocessor()([{'inputs': _images(3, 4, 4)}])
