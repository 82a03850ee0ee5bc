"""Pixel-difference mode of ``benchmark.py``: how far each decode mode of mae-mm's loader is from
mmpretrain's MAE pipeline (``LoadImageFromFile`` + ``RandomResizedCrop(backend='pillow')``, its
recipe), on the same crop boxes.

For every image the numpy RNG is seeded identically before each pipeline, so every pipeline
draws the same box (``FastRandomResizedCrop`` draws it with mmpretrain's own
``rand_crop_params``); the 224 px outputs are compared with the reference's: mean and max
absolute difference (levels of 0-255) over all pixels of all images, and the share of images
that are identical. Without ``--data-dir``, two sets of generated photo JPEGs: ImageNet-sized
(500x375), where a reduced-scale decode never applies, and large (1600x1200), where it does.
"""
import glob
import os.path as osp
import tempfile
from typing import Callable, Dict, List, Optional

import numpy as np
from mmengine.registry import DefaultScope

from benchmark_pipeline import (CROP, FOLDER_VARIANTS, list_jpegs, mmpretrain_pipeline,
                                write_jpeg_folder)

REFERENCE = "mmpretrain, backend='pillow'"


def crop_functions() -> Dict[str, Callable[[str], np.ndarray]]:
    """The crop (uint8 BGR) each pipeline makes of an image file; the reference first."""
    from mae_mm.datasets.transforms import FastRandomResizedCrop
    functions = {}
    for name, backend in ((REFERENCE, 'pillow'), ("mmpretrain, backend='cv2'", 'cv2')):
        pipeline = mmpretrain_pipeline(backend, flip_and_pack=False)
        functions[name] = lambda path, p=pipeline: p(dict(img_path=path))['img']
    with DefaultScope.overwrite_default_scope('mae_mm'):
        for name, settings in FOLDER_VARIANTS.items():
            transform = FastRandomResizedCrop(**CROP, **settings)
            functions[name] = lambda path, t=transform: t(dict(img_path=path))['img']
    return functions


def compare(files: List[str]) -> Dict[str, dict]:
    """Mean/max absolute difference to the reference of each pipeline, same box per image."""
    functions = crop_functions()
    totals = {name: dict(abs_sum=0, pixels=0, max=0, identical=0) for name in functions}
    for seed, path in enumerate(files):
        outputs = {}
        for name, crop in functions.items():
            np.random.seed(seed)
            outputs[name] = crop(path).astype(np.int16)
        for name, out in outputs.items():
            diff = np.abs(out - outputs[REFERENCE])
            total = totals[name]
            total['abs_sum'] += int(diff.sum())
            total['pixels'] += diff.size
            total['max'] = max(total['max'], int(diff.max()))
            total['identical'] += int(not diff.any())
    return {name: dict(mean_abs=t['abs_sum'] / t['pixels'], max_abs=t['max'],
                       identical_images=t['identical'], images=len(files))
            for name, t in totals.items()}


def pixel_differences(data_dir: Optional[str], num_images: int, smoke: bool = False) -> dict:
    """The comparison on ``data_dir``'s JPEGs (a folder, searched recursively, or a glob
    pattern; cycled through, one box per visit, up to ``num_images`` crops), or on generated
    500x375 and 1600x1200 ones."""
    if data_dir is not None:
        files = list_jpegs(data_dir, 4 if smoke else num_images)
        return dict(mode='pixel_difference', reference=REFERENCE, sets={data_dir: compare(files)})
    sizes = [(500, 375), (1600, 1200)]
    counts = [4, 2] if smoke else [num_images, max(num_images // 4, 1)]
    sets = {}
    with tempfile.TemporaryDirectory(prefix='mae_mm_pixels_') as tmp:
        for (width, height), count in zip(sizes, counts):
            root = write_jpeg_folder(osp.join(tmp, f'{width}x{height}'), count, (width, height))
            files = sorted(glob.glob(osp.join(root, '*.jpg')))
            sets[f'generated {width}x{height} q90'] = compare(files)
    return dict(mode='pixel_difference', reference=REFERENCE, sets=sets)


def print_differences(result: dict) -> None:
    print(f"difference to {result['reference']} on the same crop boxes (levels of 0-255)")
    for set_name, rows in result['sets'].items():
        images = next(iter(rows.values()))['images']
        print(f'{set_name}, {images} crops:')
        print(f"  {'':34s}{'mean abs':>9s}{'max abs':>9s}{'identical':>11s}")
        for name, row in rows.items():
            if name == result['reference']:
                continue
            print(f"  {name:34s}{row['mean_abs']:9.3f}{row['max_abs']:9d}"
                  f"{row['identical_images']:>7d}/{row['images']}")
