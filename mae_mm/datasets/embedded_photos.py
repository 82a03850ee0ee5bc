"""A real-photo image folder built from photographs that ship inside installed packages.

scikit-image bundles a dozen natural photographs (astronaut, coffee, cat, rocket...). Random
crops of them, written as ordinary JPEG files, make a small unlabelled pretraining set that needs
no download: the default data of the CPU quick start. :func:`write_structured_crops` picks the
crops of its reconstruction figure: natural photographs only, and crops with visible structure.
"""
import os
import os.path as osp
from typing import List, Tuple

import numpy as np

PHOTO_NAMES = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
               'motorcycle_left', 'motorcycle_right', 'hubble_deep_field', 'retina', 'cat',
               'colorwheel', 'logo')
#: Drawn, not photographed: fine to train on, not to show what MAE recovers.
SYNTHETIC_NAMES = ('colorwheel', 'logo')


def bundled_photos() -> List[np.ndarray]:
    """The RGB photographs of ``skimage.data`` that are bundled (no download), uint8 HxWx3."""
    return [photo for _, photo in named_bundled_photos()]


def named_bundled_photos() -> List[Tuple[str, np.ndarray]]:
    """``(name, photo)`` of every bundled photograph of :data:`PHOTO_NAMES` (uint8 HxWx3)."""
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
            photos.append((name, np.ascontiguousarray(img[..., :3]).astype(np.uint8)))
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


def crop_structure(crop: np.ndarray, view_size: int = 32) -> Tuple[float, float]:
    """How much a crop shows once resized to ``view_size`` (what the model sees).

    Returns:
        tuple: ``(std, edges)``: the standard deviation of the gray levels (0 for a uniform
        crop) and the mean absolute difference between neighbouring gray pixels (edges and
        texture), both in 0-255 units.
    """
    from PIL import Image
    small = Image.fromarray(crop).resize((view_size, view_size), Image.BICUBIC)
    gray = np.asarray(small.convert('L'), dtype=np.float32)
    edges = (np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean()) / 2
    return float(gray.std()), float(edges)


def write_structured_crops(out_dir: str, num_images: int = 6, seed: int = 1,
                           min_size: int = 64, max_size: int = 160, candidates: int = 24,
                           view_size: int = 32, min_std: float = 30.0) -> List[str]:
    """Write ``num_images`` crops of the natural photographs that show structure, for figures.

    ``candidates`` random square crops (side in ``[min_size, max_size]``, seeded) are drawn from
    every natural photograph (never the synthetic :data:`SYNTHETIC_NAMES`). A crop qualifies
    when its gray levels at ``view_size`` px have a standard deviation of at least ``min_std``
    (not near-uniform); the qualifying crops with the most edge content (:func:`crop_structure`)
    are kept, at most ``ceil(num_images / photographs)`` per photograph (a photograph bundled
    under two names counts once) so that the figure shows several. The files (``photo_00000.jpg``, ...) are rewritten on every call: the same seed
    gives the same files.

    Returns:
        list[str]: The paths written, in order.
    """
    from PIL import Image
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos, seen = [], set()
    for name, photo in named_bundled_photos():
        digest = hash(photo.tobytes())  # skimage's ``cat`` is ``chelsea``: once only
        if name not in SYNTHETIC_NAMES and digest not in seen:
            photos.append(photo)
            seen.add(digest)
    if not photos:
        raise RuntimeError('scikit-image ships no natural photograph: pip install scikit-image')
    pool = []  # (qualifies, edges, photo index, crop)
    for index, photo in enumerate(photos):
        for _ in range(candidates):
            side = int(rng.integers(min_size, min(max_size, *photo.shape[:2]) + 1))
            top = int(rng.integers(0, photo.shape[0] - side + 1))
            left = int(rng.integers(0, photo.shape[1] - side + 1))
            crop = photo[top:top + side, left:left + side]
            std, edges = crop_structure(crop, view_size)
            pool.append((std >= min_std, edges, index, crop))
    pool.sort(key=lambda item: (item[0], item[1]), reverse=True)
    per_photo = -(-num_images // len(photos))
    chosen, taken = [], [0] * len(photos)
    for item in pool:
        if len(chosen) < num_images and taken[item[2]] < per_photo:
            chosen.append(item[3])
            taken[item[2]] += 1
    paths = []
    for i, crop in enumerate(chosen):
        path = osp.join(out_dir, f'photo_{i:05d}.jpg')
        Image.fromarray(crop).save(path, quality=95)
        paths.append(path)
    return paths
