"""Tiny test images written into ``tmp_path``."""
import io
import os
import os.path as osp

import numpy as np
from PIL import Image


def write_image(path: str, size=(8, 6), fmt=None, seed=0) -> str:
    """Write a small random RGB image (format from the suffix unless ``fmt``) and return path."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def jpeg_bytes(size=(64, 64), seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format='JPEG', quality=90)
    return buf.getvalue()
