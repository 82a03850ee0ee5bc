"""A small labelled image folder (ImageNet layout) of real photo crops, for the protocol tests.

Each class is one of scikit-image's bundled photographs; training crops come from the left 60%
of the photo and validation crops from the right 40%, so the two splits share no pixel.
"""
import os
import os.path as osp
from typing import Sequence

import numpy as np

DEFAULT_CLASSES = ('astronaut', 'coffee', 'chelsea')


def write_labelled_photo_folder(root: str, split: str = 'train',
                                classes: Sequence[str] = DEFAULT_CLASSES, per_class: int = 8,
                                min_size: int = 48, max_size: int = 96, seed: int = 0) -> str:
    """Write ``root/<class>/<i>.jpg`` crops of the named photos; returns ``root``.

    Args:
        root (str): Output folder.
        split (str): 'train' (left 60% of each photo) or 'val' (right 40%).
        classes (Sequence[str]): Names of ``skimage.data`` photographs, one class each.
        per_class (int): Images per class.
        min_size (int): Smallest crop side.
        max_size (int): Largest crop side.
        seed (int): Seed of the crop positions.
    """
    from PIL import Image
    from skimage import data as skdata
    rng = np.random.default_rng(seed)
    for name in classes:
        photo = getattr(skdata, name)()[..., :3]
        width = photo.shape[1]
        cut = int(width * 0.6)
        left_lo, left_hi = (0, cut) if split == 'train' else (cut, width)
        os.makedirs(osp.join(root, name), exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(min_size, min(max_size, left_hi - left_lo, photo.shape[0]) + 1))
            top = int(rng.integers(0, photo.shape[0] - side + 1))
            left = int(rng.integers(left_lo, left_hi - side + 1))
            Image.fromarray(np.ascontiguousarray(photo[top:top + side, left:left + side])).save(
                osp.join(root, name, f'{name}_{i:03d}.jpg'), quality=90)
    return root


TOY_CLASSES = ('astronaut', 'coffee', 'chelsea', 'rocket')


def write_photo_classes(root: str = 'data/photo_classes') -> str:
    """The folder of the toy configs: ``root/{train,val}``, 4 classes, 100 / 40 crops each."""
    write_labelled_photo_folder(osp.join(root, 'train'), 'train', TOY_CLASSES, per_class=100,
                                seed=0)
    write_labelled_photo_folder(osp.join(root, 'val'), 'val', TOY_CLASSES, per_class=40, seed=1)
    return root
