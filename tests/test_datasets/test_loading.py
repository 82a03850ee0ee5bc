import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from PIL import ImageFile

from mae_mm.datasets import (ImageFolder, LoadImageSafe, skipped_image_count)
from mae_mm.datasets.transforms import jpeg_is_truncated
from mae_mm.registry import TRANSFORMS

from ._image_utils import jpeg_bytes, write_image


def _build(**kwargs):
    init_default_scope('mae_mm')
    return TRANSFORMS.build(dict(type='LoadImageSafe', **kwargs))


@pytest.fixture
def bad_files(tmp_path):
    """A folder with two good images and four broken ones (sorted names)."""
    folder = tmp_path / 'imgs'
    write_image(str(folder / 'a_good.png'), size=(8, 6))
    write_image(str(folder / 'b_good.jpg'), size=(10, 4))
    (folder / 'c_corrupt.jpg').write_bytes(b'this is not a jpeg' * 10)
    (folder / 'd_empty.png').write_bytes(b'')
    data = jpeg_bytes()
    (folder / 'e_truncated.jpg').write_bytes(data[:int(len(data) * 0.6)])
    (folder / 'f_truncated_tail.jpg').write_bytes(data[:-2])  # only the EOI marker missing
    return folder


def test_loads_good_image(bad_files):
    out = _build()(dict(img_path=str(bad_files / 'b_good.jpg')))
    assert out['img'].shape == (4, 10, 3) and out['img'].dtype == np.uint8
    assert out['img_shape'] == out['ori_shape'] == (4, 10)
    assert skipped_image_count() == 0
    assert 'on_error' in repr(_build())


def test_jpeg_truncation_check():
    data = jpeg_bytes()
    assert not jpeg_is_truncated(data)
    assert jpeg_is_truncated(data[:len(data) // 2]) and jpeg_is_truncated(data[:-2])
    assert not jpeg_is_truncated(b'\x89PNG\r\n')


@pytest.mark.parametrize('name', ['c_corrupt.jpg', 'd_empty.png', 'e_truncated.jpg',
                                  'f_truncated_tail.jpg', 'missing.png'])
def test_skip_counts_and_warns(bad_files, name, mmengine_logs):
    load = _build()
    path = str(bad_files / name)
    assert load(dict(img_path=path)) is None
    assert load(dict(img_path=path)) is None
    assert skipped_image_count() == LoadImageSafe.num_skipped == 2
    warnings = [m for m in mmengine_logs if path in m]
    assert len(warnings) == 1 and 'skipping unreadable image' in warnings[0]  # once per file


@pytest.mark.parametrize('name', ['c_corrupt.jpg', 'e_truncated.jpg', 'missing.png'])
def test_on_error_raise(bad_files, name):
    path = str(bad_files / name)
    with pytest.raises(OSError) as err:
        _build(on_error='raise')(dict(img_path=path))
    assert path in str(err.value) and '\n' not in str(err.value)
    assert skipped_image_count() == 0
    with pytest.raises(ValueError, match='on_error'):
        LoadImageSafe(on_error='ignore')


def test_truncated_jpeg_caught_when_decoder_accepts_it(bad_files, monkeypatch):
    """Pillow with LOAD_TRUNCATED_IMAGES=True (set by some libraries) decodes a truncated JPEG
    without error; the end-marker check still rejects it."""
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
    path = str(bad_files / 'e_truncated.jpg')
    lenient = _build(imdecode_backend='pillow', check_truncated=False)
    assert lenient(dict(img_path=path))['img'].shape == (64, 64, 3)
    assert _build(imdecode_backend='pillow')(dict(img_path=path)) is None
    assert skipped_image_count() == 1


def _pipeline():
    return [dict(type='LoadImageSafe'), dict(type='mmpretrain.PackInputs')]


def test_dataset_refetches_skipped_images(bad_files, mmengine_logs):
    init_default_scope('mae_mm')
    ds = ImageFolder(str(bad_files), pipeline=_pipeline())
    assert len(ds) == 6
    np.random.seed(0)
    shapes = set()
    for i in range(len(ds)):
        out = ds[i]
        assert isinstance(out['inputs'], torch.Tensor)
        shapes.add(tuple(out['inputs'].shape))
    assert shapes <= {(3, 6, 8), (3, 4, 10)}
    assert skipped_image_count() >= 4  # every broken index was skipped at least once
    for name in ['c_corrupt', 'd_empty', 'e_truncated', 'f_truncated_tail']:
        assert any(name in m for m in mmengine_logs)


def test_dataset_with_labels_packs_gt_label(tmp_path):
    write_image(str(tmp_path / 'cat' / 'a.png'))
    (tmp_path / 'cat' / 'b.jpg').write_bytes(b'garbage')
    write_image(str(tmp_path / 'dog' / 'c.png'))
    init_default_scope('mae_mm')
    ds = ImageFolder(str(tmp_path), with_label=True, pipeline=_pipeline())
    np.random.seed(1)
    labels = [ds[i]['data_samples'].gt_label.item() for i in range(len(ds))]
    assert labels[0] == 0 and labels[2] == 1 and labels[1] in (0, 1)
    assert skipped_image_count() >= 1


def test_dataset_all_broken_gives_clear_error(bad_files, tmp_path):
    folder = tmp_path / 'broken'
    folder.mkdir()
    (folder / 'x.jpg').write_bytes(b'nope')
    init_default_scope('mae_mm')
    ds = ImageFolder(str(folder), pipeline=_pipeline(), max_refetch=3)
    with pytest.raises(RuntimeError, match='max_refetch') as err:
        ds[0]
    assert str(folder) in str(err.value)
    assert skipped_image_count() == 4

    test_ds = ImageFolder(str(bad_files), pipeline=_pipeline(), test_mode=True)
    assert test_ds[0]['inputs'].shape == (3, 6, 8)
    with pytest.raises(RuntimeError, match='c_corrupt.jpg') as err:
        test_ds[2]
    assert 'evaluation cannot skip' in str(err.value)
