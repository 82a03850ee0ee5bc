import gzip

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

from mae_mm.datasets import ArrayImageDataset, FashionMNIST, read_idx_gz, stratified_subset
from mae_mm.registry import DATASETS



def write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b''.join(d.to_bytes(4, 'big') for d in arr.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + arr.tobytes())


@pytest.fixture
def fake_fmnist(tmp_path):
    """A miniature Fashion-MNIST folder: 40 train / 20 test images of 4x5, 10 classes."""
    rng = np.random.default_rng(0)
    for split, n in [('train', 40), ('t10k', 20)]:
        write_idx(tmp_path / f'{split}-images-idx3-ubyte.gz', rng.integers(0, 256, (n, 4, 5)))
        write_idx(tmp_path / f'{split}-labels-idx1-ubyte.gz', np.arange(n) % 10)
    return str(tmp_path)


@pytest.mark.parametrize('shape', [(6, 4, 5), (6, 4, 5, 1), (6, 4, 5, 3)])
def test_array_dataset_gives_rgb_uint8(shape):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ds = ArrayImageDataset(images, labels=[0, 1, 2, 0, 1, 2])
    info = ds.get_data_info(4)
    assert info['img'].shape == (4, 5, 3) and info['img'].dtype == np.uint8
    assert info['gt_label'] == 1 and info['img_shape'] == (4, 5)
    gray = images[4].reshape(4, 5, -1)
    assert np.array_equal(info['img'], np.broadcast_to(gray, (4, 5, 3)))
    assert ds.get_gt_labels().tolist() == [0, 1, 2, 0, 1, 2] and ds.get_cat_ids(2) == [2]


def test_array_dataset_pipeline_and_errors():
    init_default_scope('mae_mm')
    images = np.zeros((3, 8, 8), np.uint8)
    ds = DATASETS.build(dict(type='ArrayImageDataset', images=images, labels=[2, 0, 1],
                             pipeline=[dict(type='mmpretrain.PackInputs')]))
    out = ds[0]
    assert isinstance(out['inputs'], torch.Tensor) and out['inputs'].shape == (3, 8, 8)
    assert out['data_samples'].gt_label.item() == 2
    assert 'gt_label' not in ArrayImageDataset(images).get_data_info(0)
    with pytest.raises(ValueError, match='uint8'):
        ArrayImageDataset(images.astype(np.float32))
    with pytest.raises(ValueError, match='3 images but 2 labels'):
        ArrayImageDataset(images, labels=[0, 1])


def test_stratified_subset():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    keep = stratified_subset(labels, 10, seed=3)
    assert len(keep) == 10 and np.all(np.diff(keep) > 0)
    assert np.bincount(labels[keep]).tolist() == [1, 2, 3, 4]
    assert np.array_equal(keep, stratified_subset(labels, 10, seed=3))
    assert not np.array_equal(keep, stratified_subset(labels, 10, seed=4))
    assert len(stratified_subset(labels, 7)) == 7
    with pytest.raises(ValueError, match='cannot draw'):
        stratified_subset(labels, 101)


def test_read_idx_gz(tmp_path):
    write_idx(tmp_path / 'x.gz', np.arange(24).reshape(2, 3, 4))
    assert np.array_equal(read_idx_gz(str(tmp_path / 'x.gz')), np.arange(24).reshape(2, 3, 4))
    with gzip.open(tmp_path / 'bad.gz', 'wb') as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, 'big') + b'\x00' * 3)
    with pytest.raises(ValueError, match='truncated'):
        read_idx_gz(str(tmp_path / 'bad.gz'))


def test_fashion_mnist_loader_on_fake_files(fake_fmnist):
    ds = FashionMNIST(data_root=fake_fmnist)
    assert len(ds) == 40 and len(ds.metainfo['classes']) == 10
    assert ds.get_data_info(13)['img'].shape == (4, 5, 3) and ds.get_data_info(13)['gt_label'] == 3
    test = FashionMNIST(data_root=fake_fmnist, split='test', test_mode=True)
    assert len(test) == 20
    sub = FashionMNIST(data_root=fake_fmnist, subset_ratio=0.5, seed=1)
    assert len(sub) == 20 and np.bincount(sub.get_gt_labels()).tolist() == [2] * 10
    assert len(FashionMNIST(data_root=fake_fmnist, num_samples=10)) == 10


def test_fashion_mnist_errors(tmp_path, fake_fmnist):
    with pytest.raises(FileNotFoundError) as err:
        FashionMNIST(data_root=str(tmp_path / 'nowhere'))
    assert 'apt-get install dataset-fashion-mnist' in str(err.value)
    assert '\n' not in str(err.value)
    with pytest.raises(ValueError, match='split'):
        FashionMNIST(data_root=fake_fmnist, split='val')
    with pytest.raises(ValueError, match='not both'):
        FashionMNIST(data_root=fake_fmnist, subset_ratio=0.1, num_samples=5)
    with pytest.raises(ValueError, match='subset_ratio'):
        FashionMNIST(data_root=fake_fmnist, subset_ratio=1.5)


def test_fashion_mnist_real_package():  # installed by tools/setup_env.sh (requirements/debian.txt)
    init_default_scope('mae_mm')
    ds = DATASETS.build(dict(type='FashionMNIST', split='test', num_samples=100, seed=0,
                             pipeline=[dict(type='mmpretrain.PackInputs')]))
    assert len(ds) == 100 and np.bincount(ds.get_gt_labels()).tolist() == [10] * 10
    assert ds[0]['inputs'].shape == (3, 28, 28)
    full = FashionMNIST(split='test', lazy_init=True)
    full.full_init()
    assert len(full) == 10000
