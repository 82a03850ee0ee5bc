"""Python side of the ``_crop_decode`` extension: JPEG region decoding and Pillow-exact bicubic.

The extension is built by ``pip install`` when libjpeg(-turbo) headers are present
(``tools/setup_env.sh`` installs them); without it :class:`FastRandomResizedCrop` falls back to
OpenCV + Pillow and gives the same pixels, only slower. ``available()`` says which is in use;
``warn_if_unavailable()`` logs once per process which package to install (FastRandomResizedCrop
calls it when built). ``MAE_MM_DISABLE_CROP_DECODE=1`` in the environment forces the fallback.
"""
import math
import os
from functools import lru_cache
from typing import Optional, Tuple

import numpy as np
from mmengine.logging import MMLogger
from PIL import Image

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
    """Whether the compiled region decoder / resizer is importable."""
    return _crop_decode is not None


def missing_extension_message(reason: Optional[str] = None) -> str:
    """What the warning about a missing extension says: why, the path taken instead, the fix."""
    reason = reason or _unavailable_reason or 'not importable'
    return ('mae_mm: FastRandomResizedCrop runs without its compiled JPEG region decoder '
            f'(mae_mm.datasets.transforms._crop_decode: {reason}). It takes the slower path '
            'instead: each image is decoded whole (OpenCV, as LoadImageFromFile) and the crop '
            "resized by Pillow: same pixels, at mmpretrain's speed (about 2x slower than the "
            'decoder on ImageNet-size JPEGs, 4x on large photos; docs/benchmarks.md). To build '
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


def _pillow_vertical_first(width: int, height: int, out_width: int, out_height: int) -> bool:
    """Pillow >= 13 runs the vertical pass first when the height shrinks by more than twice as
    many pixels as the width does (python-pillow/Pillow#9549); the pass order changes the
    rounding of the intermediate image, so it has to be followed to get Pillow's pixels."""
    return out_height < height and (height - out_height) > 2 * (width - out_width)


@lru_cache(maxsize=1)
def pass_order_rule() -> Optional[str]:
    """How the installed Pillow orders its two passes: 'pillow13' (the rule above),
    'horizontal' (always horizontal first, Pillow < 13), or None when neither reproduces it (then
    Pillow itself is used). Decided once per process from three probe resizes."""
    if _crop_decode is None:
        return None
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    cases = [(60, 60, 40, 16), (60, 60, 30, 16), (60, 60, 50, 30)]  # V, H, V under the rule
    expected = [np.asarray(Image.fromarray(probe).resize((ow, oh), Image.BICUBIC))
                for _, _, ow, oh in cases]
    for rule in ('pillow13', 'horizontal'):
        outputs = [_resize(probe, (oh, ow), (0.0, 0.0, float(w), float(h)),
                           rule == 'pillow13' and _pillow_vertical_first(w, h, ow, oh))
                   for w, h, ow, oh in cases]
        if all(np.array_equal(a, b) for a, b in zip(outputs, expected)):
            return rule
    return None


def _resize(img: np.ndarray, out_hw: Tuple[int, int], box, vertical_first: bool) -> np.ndarray:
    height, width = img.shape[:2]
    out = _crop_decode.resize_bicubic(np.ascontiguousarray(img), height, width, out_hw[0],
                                      out_hw[1], tuple(float(v) for v in box), vertical_first)
    return np.frombuffer(out, np.uint8).reshape(out_hw[0], out_hw[1], 3)


def resize_bicubic(img: np.ndarray, out_hw: Tuple[int, int], box=None) -> np.ndarray:
    """``np.asarray(Image.fromarray(img).resize((w, h), BICUBIC, box=box))`` for a (H, W, 3)
    uint8 image, pixel for pixel, computed by the extension when it reproduces the installed
    Pillow (see :func:`pass_order_rule`), else by Pillow."""
    height, width = img.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(width), float(height))
    rule = pass_order_rule() if img.ndim == 3 and img.shape[2] == 3 else None
    if rule is None:
        return np.asarray(Image.fromarray(img).resize(out_hw[::-1], Image.BICUBIC, box=box))
    vertical_first = rule == 'pillow13' and _pillow_vertical_first(
        round(box[2] - box[0]), round(box[3] - box[1]), out_hw[1], out_hw[0])
    return _resize(img, out_hw, box, vertical_first)


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


def decode_crop_resized(data: bytes, size_hw: Tuple[int, int], box, out_hw: Tuple[int, int],
                        scale: int = 1) -> np.ndarray:
    """Decode only what the crop ``box`` of a JPEG needs and resize it to ``out_hw`` (BGR).

    ``scale == 1``: the box's pixels, resized as a crop: the output of a full decode, crop
    and Pillow resize. ``scale > 1``: the box at a reduced DCT
    scale plus the filter's support around it, resized with the scaled box: the output of
    Pillow's ``draft`` + ``resize(box=...)``.
    """
    height, width = size_hw
    left, top, right, bottom = box
    if scale == 1:
        return resize_bicubic(decode_region(data, box), out_hw)
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
    return resize_bicubic(region, out_hw, (sbox[0] - x0, sbox[1] - y0, sbox[2] - x0,
                                           sbox[3] - y0))


def decode_region(data: bytes, box, scale: int = 1) -> np.ndarray:
    """The pixels ``box`` = (left, top, right, bottom) of a JPEG decoded at 1/``scale``, BGR."""
    left, top, right, bottom = box
    out = _crop_decode.decode_region(data, left, top, right - left, bottom - top, scale)
    return np.frombuffer(out, np.uint8).reshape(bottom - top, right - left, 3)
