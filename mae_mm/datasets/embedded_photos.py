"""A real-photo image folder built from photographs that ship inside installed packages.

scikit-image bundles a dozen natural photographs (astronaut, coffee, cat, rocket...). Random
crops of them, written as ordinary JPEG files, make a small unlabelled pretraining set that needs
no download: the default data of the CPU quick start.
"""
import os
import os.path as osp
from typing import List

import numpy as np

PHOTO_NAMES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
               'motorcycle_left', 'motorcycle_right', 'hubble_deep_field', 'retina', 'cat',
               'colorwheel', 'logo')


def bundled_photos() -> List[np.ndarray]:
    """The RGB photographs of ``skimage.data`` that are bundled (no download), uint8 HxWx3."""
    from skimage import data as skdata
    photos = []
    for name in PHOTO_NAMES:
        loader = getattr(skdata, name, None)
        if loader is None:
            continue
        try:
            img = loader()
        except Exception:  # a photo that would need a download in this version
            continue
        if isinstance(img, tuple):  # the stereo motorcycle pair loaders return tuples
            img = img[0]
        if img.ndim == 3 and img.shape[2] >= 3 and min(img.shape[:2]) >= 128:
            photos.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    if not photos:
        raise RuntimeError('scikit-image ships no usable photographs: pip install scikit-image')
    return photos


def write_photo_crops(out_dir: str, num_images: int = 2000, min_size: int = 64,
                      max_size: int = 192, seed: int = 0) -> int:
    """Write ``num_images`` random square crops of the bundled photos as JPEG files.

    Crops have a random side in ``[min_size, max_size]`` (later random-resized-cropped by the
    training pipeline). Existing files are kept, so the call is cheap when the folder is ready.

    Returns:
        int: Number of images in ``out_dir`` afterwards.
    """
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    existing = [f for f in os.listdir(out_dir) if f.endswith('.jpg')]
    if len(existing) >= num_images:
        return len(existing)
    rng = np.random.default_rng(seed)
    photos = bundled_photos()
    for i in range(num_images):
        path = osp.join(out_dir, f'photo_{i:05d}.jpg')
        photo = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(min_size, min(max_size, *photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        if not osp.exists(path):
            Image.fromarray(photo[top:top + side, left:left + side]).save(path, quality=90)
    return num_images
