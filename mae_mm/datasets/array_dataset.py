"""Data sets held in memory as uint8 arrays, e.g. Fashion-MNIST from its Debian package."""
import gzip
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset

from mae_mm.registry import DATASETS


def stratified_subset(labels: np.ndarray, num: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``num`` samples drawn at random, per class in proportion to its size.

    Args:
        labels (np.ndarray): Integer labels, shape (N,).
        num (int): How many samples to keep, 1 <= num <= N.
        seed (int): Seed of the draw; the same seed gives the same subset.

    Returns:
        np.ndarray: int64 indices, sorted.
    """
    labels = np.asarray(labels)
    if not 1 <= num <= len(labels):
        raise ValueError(f'cannot draw {num} samples out of {len(labels)}: use 1..{len(labels)}')
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * num / len(labels)
    quota = np.floor(share).astype(np.int64)
    # Hand the rounding remainder to the classes with the largest fractional share.
    quota[np.argsort(quota - share, kind='stable')[:num - quota.sum()]] += 1
    picks = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


@DATASETS.register_module()
class ArrayImageDataset(BaseDataset):
    """Images given as one uint8 array, with optional integer labels.

    Each sample's data info holds ``img`` (H, W, 3) uint8, with gray images replicated to three
    channels so that mmpretrain/mmcv transforms apply unchanged, ``img_shape``, ``ori_shape``,
    ``gt_label`` (when labels are given) and ``img_index`` (row in the array). No loading
    transform is needed in the pipeline. The array is kept once, outside the serialized data
    list, so dataloader workers share it.

    Args:
        images (np.ndarray): (N, H, W) or (N, H, W, C) uint8 array, C in {1, 3}.
        labels (Sequence[int] | np.ndarray, optional): N integer labels.
        metainfo (dict, optional): Meta information, e.g. ``classes``.
        pipeline (Sequence[dict | Callable]): Data transforms. Defaults to ().
        test_mode (bool): Evaluation data set. Defaults to False.
        indices (int | Sequence[int], optional): Keep only these samples (see BaseDataset).
        serialize_data (bool): Defaults to True.
        lazy_init (bool): Defaults to False.
        max_refetch (int): Defaults to 1000.
    """

    def __init__(self,
                 images: Optional[np.ndarray] = None,
                 labels: Optional[Union[Sequence[int], np.ndarray]] = None,
                 metainfo: Optional[dict] = None,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 **kwargs) -> None:
        if images is not None:
            self._set_arrays(images, labels)
        super().__init__(metainfo=metainfo, pipeline=list(pipeline), test_mode=test_mode,
                         indices=indices, serialize_data=serialize_data, lazy_init=lazy_init,
                         max_refetch=max_refetch, **kwargs)

    def _set_arrays(self, images: np.ndarray, labels=None) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
                images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise ValueError(f'images must be a uint8 array (N, H, W) or (N, H, W, 1|3), got '
                             f'{images.dtype} {images.shape}')
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(labels) != len(images):
                raise ValueError(f'got {len(images)} images but {len(labels)} labels')
        self.images, self.labels = images, labels

    def load_arrays(self) -> None:
        """Set ``self.images`` / ``self.labels``; override to read them from files."""
        raise ValueError('ArrayImageDataset needs images=<uint8 array>')

    def load_data_list(self) -> List[dict]:
        """One ``dict(img_index[, gt_label])`` per row of the array."""
        if getattr(self, 'images', None) is None:
            self.load_arrays()
        if self.labels is None:
            return [dict(img_index=i) for i in range(len(self.images))]
        return [dict(img_index=i, gt_label=int(y)) for i, y in enumerate(self.labels)]

    def get_data_info(self, idx: int) -> dict:
        """The data info of ``idx`` with its image attached as (H, W, 3) uint8."""
        info = super().get_data_info(idx)
        img = self.images[info['img_index']]
        if img.ndim == 2 or img.shape[-1] == 1:
            img = np.repeat(img.reshape(img.shape[:2] + (1, )), 3, axis=2)
        else:
            img = img.copy()
        info.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return info

    def get_cat_ids(self, idx: int) -> List[int]:
        """The label of sample ``idx`` as a one-element list (for class-balanced wrappers)."""
        return [int(BaseDataset.get_data_info(self, idx)['gt_label'])]

    def get_gt_labels(self) -> np.ndarray:
        """The labels of all samples (after ``indices``), as an int64 array."""
        return np.array([BaseDataset.get_data_info(self, i)['gt_label']
                         for i in range(len(self))], dtype=np.int64)


def read_idx_gz(path: str) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) of unsigned bytes into an array.

    Args:
        path (str): ``*-idx{1,3}-ubyte.gz`` file.

    Returns:
        np.ndarray: uint8 array of the shape given in the header.
    """
    with gzip.open(path, 'rb') as f:
        data = f.read()
    magic = int.from_bytes(data[:4], 'big')
    ndim, dtype_code = magic & 0xFF, (magic >> 8) & 0xFF
    if magic >> 16 != 0 or dtype_code != 0x08 or ndim == 0:
        raise ValueError(f'{path!r} is not an IDX file of unsigned bytes (magic {magic:#x})')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f'{path!r} is truncated: header says {shape}, file holds '
                         f'{len(data) - offset} bytes of data')
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape)


@DATASETS.register_module()
class FashionMNIST(ArrayImageDataset):
    """Fashion-MNIST (Zalando, MIT): 28x28 gray clothes, 10 classes, 60k train / 10k test.

    Read from the IDX ``.gz`` files installed by the Debian package ``dataset-fashion-mnist``.
    Images come as (28, 28, 3) uint8 (gray replicated) in ``img``, labels in ``gt_label``.

    Args:
        data_root (str): Folder of the four IDX files. Defaults to
            '/usr/share/datasets/fashion-mnist'.
        split (str): ``'train'`` or ``'test'``. Defaults to 'train'.
        subset_ratio (float, optional): Keep this fraction of the split (e.g. 0.1 for a
            10%-labels study), drawn per class in proportion (stratified). Defaults to None.
        num_samples (int, optional): Keep this many samples instead (stratified). Defaults to
            None. At most one of ``subset_ratio`` and ``num_samples``.
        seed (int): Seed of the subset draw. Defaults to 0.
        **kwargs: Arguments of :class:`ArrayImageDataset` (``pipeline``, ``test_mode``, ...).
    """

    METAINFO = dict(classes=('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                             'Shirt', 'Sneaker', 'Bag', 'Ankle boot'))
    FILES = dict(train=('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
                 test=('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'))

    def __init__(self,
                 data_root: str = '/usr/share/datasets/fashion-mnist',
                 split: str = 'train',
                 subset_ratio: Optional[float] = None,
                 num_samples: Optional[int] = None,
                 seed: int = 0,
                 **kwargs) -> None:
        if split not in self.FILES:
            raise ValueError(f"FashionMNIST: split={split!r} is not valid: use 'train' or 'test'")
        if subset_ratio is not None and num_samples is not None:
            raise ValueError('FashionMNIST: give subset_ratio or num_samples, not both')
        if subset_ratio is not None and not 0 < subset_ratio <= 1:
            raise ValueError(f'FashionMNIST: subset_ratio={subset_ratio} must be in (0, 1]')
        if not osp.isdir(data_root):
            raise FileNotFoundError(
                f'Fashion-MNIST data root {data_root!r} does not exist: install it with '
                f'`apt-get install dataset-fashion-mnist` or set dataset.data_root to a folder '
                f'with the IDX .gz files')
        missing = [f for f in self.FILES[split] if not osp.isfile(osp.join(data_root, f))]
        if missing:
            raise FileNotFoundError(
                f'Fashion-MNIST files {missing} are missing in {data_root!r}: reinstall with '
                f'`apt-get install --reinstall dataset-fashion-mnist` or fix dataset.data_root')
        self.data_root_dir, self.split = data_root, split
        self.subset_ratio, self.num_samples, self.seed = subset_ratio, num_samples, seed
        super().__init__(**kwargs)

    def load_arrays(self) -> None:
        """Read the split's IDX files and draw the optional subset."""
        img_file, label_file = (osp.join(self.data_root_dir, f) for f in self.FILES[self.split])
        images, labels = read_idx_gz(img_file), read_idx_gz(label_file).astype(np.int64)
        num = self.num_samples
        if self.subset_ratio is not None:
            num = max(1, int(round(self.subset_ratio * len(labels))))
        if num is not None and num != len(labels):
            keep = stratified_subset(labels, num, self.seed)
            images, labels = images[keep], labels[keep]
        self._set_arrays(images, labels)
