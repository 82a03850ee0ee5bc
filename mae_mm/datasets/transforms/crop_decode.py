"""Python side of the ``_crop_decode`` extension: JPEG region decoding (libjpeg-turbo).

The extension is built by ``pip install`` when libjpeg(-turbo) headers are present
(``tools/setup_env.sh`` installs them); without it :class:`FastRandomResizedCrop` decodes each
image whole with OpenCV and gives the same pixels, only slower. ``available()`` says which is in
use; ``warn_if_unavailable()`` logs once per process which package to install
(FastRandomResizedCrop calls it when built). ``MAE_MM_DISABLE_CROP_DECODE=1`` in the environment
forces the fallback. Resizing is not done here: the transform uses Pillow or OpenCV.
"""
import math
import os
from typing import Optional, Tuple

import numpy as np
from mmengine.logging import MMLogger

# Set to 1 to force the fallback (tests; comparing the two paths).
DISABLE_ENV = 'MAE_MM_DISABLE_CROP_DECODE'

if os.environ.get(DISABLE_ENV, '').strip() not in ('', '0'):
    _crop_decode = None
    _unavailable_reason = f'disabled by {DISABLE_ENV}={os.environ[DISABLE_ENV]}'
else:
    try:
        from . import _crop_decode
        _unavailable_reason = None
    except ImportError as _err:  # built without libjpeg headers
        _crop_decode = None
        _unavailable_reason = f'not importable: {_err}'

_warned = False

_BICUBIC_SUPPORT = 2.0


def available() -> bool:
    """Whether the compiled region decoder is importable."""
    return _crop_decode is not None


def missing_extension_message(reason: Optional[str] = None) -> str:
    """What the warning about a missing extension says: why, the path taken instead, the fix."""
    reason = reason or _unavailable_reason or 'not importable'
    return ('mae_mm: FastRandomResizedCrop runs without its compiled JPEG region decoder '
            f'(mae_mm.datasets.transforms._crop_decode: {reason}). It takes the slower path '
            'instead: each image is decoded whole (OpenCV, as LoadImageFromFile), then cropped '
            'and resized: same pixels, slower decoding (docs/benchmarks.md). To build '
            'it, install the libjpeg-turbo headers (Debian: apt-get install libjpeg62-turbo-dev; '
            'Ubuntu: libjpeg-turbo8-dev; conda: libjpeg-turbo; Fedora: libjpeg-turbo-devel) and '
            'reinstall mae-mm (pip install -e . or pip install . in its checkout).')


def warn_if_unavailable() -> Optional[str]:
    """Log :func:`missing_extension_message` once per process when the extension is missing
    (called when a :class:`FastRandomResizedCrop` is built). Returns the message when it was
    logged by this call, None otherwise."""
    global _warned
    if _crop_decode is not None or _warned:
        return None
    _warned = True
    message = missing_extension_message()
    MMLogger.get_current_instance().warning(message)
    return message


def jpeg_info(data: bytes) -> Tuple[int, int, int]:
    """(width, height, components) from a JPEG header."""
    return _crop_decode.jpeg_info(data)


def dct_scale(size_hw: Tuple[int, int], box, out_hw: Tuple[int, int]) -> int:
    """The largest JPEG DCT scale denominator (1, 2, 4, 8) that keeps the crop ``box``
    (left, top, right, bottom) at least ``out_hw`` in both directions, chosen as Pillow's
    ``draft`` chooses it."""
    height, width = size_hw
    left, top, right, bottom = box
    need_w = math.ceil(width * out_hw[1] / (right - left))
    need_h = math.ceil(height * out_hw[0] / (bottom - top))
    room = min(width // need_w, height // need_h)
    return next((scale for scale in (8, 4, 2) if scale <= room), 1)


def decode_crop(data: bytes, size_hw: Tuple[int, int], box, out_hw: Tuple[int, int],
                scale: int = 1) -> Tuple[np.ndarray, Optional[Tuple[float, ...]]]:
    """Decode only what the crop ``box`` (left, top, right, bottom) of a JPEG needs (BGR).

    Returns ``(pixels, sub_box)``. ``scale == 1``: the box's pixels, ``sub_box`` None (resize
    all of them). ``scale > 1``: the box at a reduced DCT scale plus the bicubic filter's support
    around it, and ``sub_box`` the box in those pixels (floats), to resize as Pillow's ``draft``
    + ``resize(box=sub_box)`` does.
    """
    height, width = size_hw
    left, top, right, bottom = box
    if scale == 1:
        return decode_region(data, box), None
    scaled_w, scaled_h = -(-width // scale), -(-height // scale)
    fx, fy = scaled_w / width, scaled_h / height
    sbox = (left * fx, top * fy, right * fx, bottom * fy)
    margin_x = math.ceil(_BICUBIC_SUPPORT * max((sbox[2] - sbox[0]) / out_hw[1], 1.0)) + 1
    margin_y = math.ceil(_BICUBIC_SUPPORT * max((sbox[3] - sbox[1]) / out_hw[0], 1.0)) + 1
    x0 = max(0, math.floor(sbox[0]) - margin_x)
    x1 = min(scaled_w, math.ceil(sbox[2]) + margin_x)
    y0 = max(0, math.floor(sbox[1]) - margin_y)
    y1 = min(scaled_h, math.ceil(sbox[3]) + margin_y)
    region = decode_region(data, (x0, y0, x1, y1), scale)
    return region, (sbox[0] - x0, sbox[1] - y0, sbox[2] - x0, sbox[3] - y0)


def decode_region(data: bytes, box, scale: int = 1) -> np.ndarray:
    """The pixels ``box`` = (left, top, right, bottom) of a JPEG decoded at 1/``scale``, BGR."""
    left, top, right, bottom = box
    out = _crop_decode.decode_region(data, left, top, right - left, bottom - top, scale)
    return np.frombuffer(out, np.uint8).reshape(bottom - top, right - left, 3)
