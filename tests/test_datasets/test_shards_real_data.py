"""Shards of real image folders, written by the converter as a user runs it, read back byte for
byte through mae-mm's ``WebDatasetShards`` and through the independent ``webdataset`` package:

- the photographs and label images of Debian's ``labelme-examples`` (JPEG and PNG files of
  several sizes, next to non-image files and hidden folders), converted by
  ``python tools/dataset_converters/images_to_shards.py SRC DST --shard-size ... --verify``;
- Fashion-MNIST (Debian's ``dataset-fashion-mnist``) written by this test as gray PNG files in
  class folders (ImageNet layout), converted through the tool's ``main(argv)``.

A missing Debian package (requirements/debian.txt, installed by tools/setup_env.sh) or a missing
``webdataset`` (requirements/tests.txt) fails these tests with the line that installs it.
"""
import glob
import os
import os.path as osp
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mae_mm.datasets import FashionMNIST, ImageFolder, WebDatasetShards
from mae_mm.datasets.image_folder import IMG_EXTENSIONS
from ..test_projects.conftest import labelme_path
from .test_webdataset_shards import images_to_shards, write

try:
    import webdataset as wds
except ImportError:  # pragma: no cover - a broken environment
    wds = None

FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
NUM_FASHION = 300  # 30 per class (a stratified draw of the test split)


def _require_webdataset():
    if wds is None:
        pytest.fail('the webdataset package is missing: pip install -r requirements/tests.txt')


def _image_files(src):
    """The images under ``src`` as sorted relative paths, found with ``glob`` (which, like the
    converter's folder scan, passes over hidden files and folders), not with mae-mm's scan."""
    paths = glob.glob(osp.join(src, '**', '*'), recursive=True)
    return sorted(osp.relpath(p, src).replace(os.sep, '/') for p in paths
                  if osp.isfile(p) and p.lower().endswith(IMG_EXTENSIONS))


def _read(src, name):
    with open(osp.join(src, name), 'rb') as f:
        return f.read()


def assert_shards_hold_the_files(src, dst, names):
    """Every file ``names`` of ``src``, in that order, is a member of the shards in ``dst`` with
    the file's bytes, as read by ``WebDatasetShards`` and by ``webdataset.WebDataset``."""
    ds = WebDatasetShards(data_root=str(dst))
    assert [ds.get_data_info(i)['member'] for i in range(len(ds))] == names
    for i, name in enumerate(names):
        assert ds.prepare_data(i)['img_bytes'] == _read(src, name), f'WebDatasetShards: {name}'

    # the independent reader, given the shard files alone (not mae-mm's index)
    urls = sorted(glob.glob(osp.join(str(dst), 'shard-*.tar')))
    assert [osp.basename(p) for p in ds.shard_paths] == [osp.basename(u) for u in urls]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        for ext, value in sample.items():
            if not ext.startswith('__'):
                name = f"{sample['__key__']}.{ext}"
                assert name not in seen, f'webdataset: {name} twice'
                seen[name] = value
    assert list(seen) == names
    for name in names:
        assert seen[name] == _read(src, name), f'webdataset: {name}'
    return ds


def test_labelme_examples_through_the_converter_command(tmp_path):
    """The converter run as a command on the labelme-examples folder (read in place, read-only):
    several shards, one for a single image larger than the shard size."""
    _require_webdataset()
    src = labelme_path()
    names = _image_files(src)
    assert len(names) >= 50, f'{src} holds only {len(names)} images: reinstall labelme-examples'
    assert {osp.splitext(n)[1] for n in names} >= {'.jpg', '.png'}
    largest = max(osp.getsize(osp.join(src, n)) for n in names)
    assert largest > 500_000  # an image alone over --shard-size: its own shard
    dst = tmp_path / 'labelme_shards'
    run = subprocess.run(
        [sys.executable, images_to_shards.__file__, src, str(dst), '--shard-size', '500KB',
         '--verify'],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f'verified: all {len(names)} members decode' in run.stdout
    ds = assert_shards_hold_the_files(src, dst, names)
    per_shard = Counter(ds.get_data_info(i)['shard'] for i in range(len(ds)))
    assert len(per_shard) == len(ds.shard_paths) > 5 and 1 in per_shard.values()


@pytest.fixture(scope='module')
def fashion_folder(tmp_path_factory):
    """``NUM_FASHION`` Fashion-MNIST test images as gray PNG files, ``<class>/<row>.png``;
    returns the folder, the class folder names and ``{name: (label, 28x28 array)}``."""
    if not osp.isdir(FASHION_MNIST):
        pytest.fail(f'{FASHION_MNIST} missing: apt-get install dataset-fashion-mnist '
                    '(requirements/debian.txt; tools/setup_env.sh installs it)')
    data = FashionMNIST(data_root=FASHION_MNIST, split='test', num_samples=NUM_FASHION)
    classes = [c.replace('/', '-').replace(' ', '_') for c in FashionMNIST.METAINFO['classes']]
    root = tmp_path_factory.mktemp('fashion')
    written = {}
    for row, (img, label) in enumerate(zip(data.images, data.labels)):
        name = f'{classes[label]}/{row:04d}.png'
        os.makedirs(root / classes[label], exist_ok=True)
        Image.fromarray(img).save(root / name)
        written[name] = (int(label), img)
    return str(root), classes, written


def test_fashion_mnist_png_class_folders(fashion_folder, tmp_path):
    _require_webdataset()
    src, classes, written = fashion_folder
    names = sorted(written)
    assert _image_files(src) == names and len(names) == NUM_FASHION
    dst = tmp_path / 'fashion_shards'
    assert write(src, dst, '--shard-size', '40KB', '--verify') == 0
    ds = assert_shards_hold_the_files(src, dst, names)
    assert len(ds.shard_paths) > 3

    # The pixels: the members decode (as training does) to the Fashion-MNIST arrays.
    loading = WebDatasetShards(data_root=str(dst), pipeline=[dict(type='LoadImageSafe')])
    for i, name in enumerate(names):
        expected = np.repeat(written[name][1][:, :, None], 3, axis=2)
        assert np.array_equal(loading[i]['img'], expected), name

    # The class layout: the shard data set is unlabelled (pre-training; with_label=True is
    # refused), and each member keeps its class folder, so the labels ImageFolder reads from
    # the source folder (ImageNet layout) are those of the members' folders, sample by sample.
    with pytest.raises(ValueError, match='with_label=False'):
        WebDatasetShards(data_root=str(dst), with_label=True)
    folder = ImageFolder(data_root=src, with_label=True)
    assert list(folder.metainfo['classes']) == sorted(classes)
    assert len(folder) == len(ds)
    for i, name in enumerate(names):
        info = folder.get_data_info(i)
        member = ds.get_data_info(i)['member']
        assert osp.relpath(info['img_path'], src).replace(os.sep, '/') == member == name
        class_name = folder.metainfo['classes'][info['gt_label']]
        assert member.split('/')[0] == class_name == classes[written[name][0]]
