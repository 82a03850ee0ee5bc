"""The compiled region decoder against OpenCV's decoder and Pillow's reduced-scale decode."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from mae_mm.datasets.transforms import crop_decode


@pytest.fixture(scope='module')
def photo():
    """A 301x227 photo (odd sizes: partial iMCUs at the right and bottom edges)."""
    from skimage import data as skdata
    return np.asarray(Image.fromarray(skdata.chelsea()).resize((301, 227), Image.BICUBIC))


def _jpeg(rgb: np.ndarray, **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='JPEG', quality=90, **save_args)
    return buf.getvalue()


def _opencv(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_extension_is_built():
    """tools/setup_env.sh installs libjpeg headers, so the fast path must be there."""
    assert crop_decode.available()


@pytest.mark.parametrize('variant', ['4:2:0', '4:2:2', '4:4:4', 'progressive', 'grey'])
def test_region_equals_the_same_region_of_a_full_decode(photo, variant):
    """Every box (edges included) equals OpenCV's full decode cropped: chroma upsampling at the
    box's edges must use the pixels beyond them, as a full decode does."""
    if variant == 'grey':
        data = _jpeg(np.asarray(Image.fromarray(photo).convert('L')))
    elif variant == 'progressive':
        data = _jpeg(photo, progressive=True)
    else:
        data = _jpeg(photo, subsampling=variant)
    full = _opencv(data)
    height, width = full.shape[:2]
    assert crop_decode.jpeg_info(data)[:2] == (width, height)
    rng = np.random.default_rng(0)
    boxes = [(0, 0, width, height), (0, 0, 1, 1), (width - 1, height - 1, width, height)]
    for _ in range(40):
        w, h = int(rng.integers(1, width + 1)), int(rng.integers(1, height + 1))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        boxes.append((left, top, left + w, top + h))
    for left, top, right, bottom in boxes:
        region = crop_decode.decode_region(data, (left, top, right, bottom))
        np.testing.assert_array_equal(region, full[top:bottom, left:right],
                                      err_msg=f'{variant} box {(left, top, right, bottom)}')


def test_region_outside_the_image_and_bad_data_raise(photo):
    data = _jpeg(photo)
    with pytest.raises(ValueError, match='outside'):
        crop_decode.decode_region(data, (0, 0, 302, 10))
    with pytest.raises(ValueError, match='JPEG'):
        crop_decode.decode_region(b'not a jpeg' * 10, (0, 0, 1, 1))
    with pytest.raises(ValueError, match='scale_denom'):
        crop_decode.decode_region(data, (0, 0, 1, 1), scale=3)


def test_reduced_scale_region_equals_libjpeg_scaled_full_decode(photo):
    """At 1/2 and 1/4 the region is the same part of the scaled full decode (Pillow's draft)."""
    data = _jpeg(photo)
    for scale in (2, 4):
        image = Image.open(io.BytesIO(data))
        image.draft('RGB', (301 // scale, 227 // scale))
        full = np.asarray(image.convert('RGB'))[..., ::-1]
        h, w = full.shape[:2]
        region = crop_decode.decode_region(data, (3, 5, w - 2, h - 1), scale)
        np.testing.assert_array_equal(region, full[5:h - 1, 3:w - 2])


def test_dct_scale_is_the_largest_that_keeps_the_output_size():
    # 1600x1200 image, a 1000x800 crop to 224: 1/4 keeps 250x200 >= 224? no -> 1/2 (500x400).
    assert crop_decode.dct_scale((1200, 1600), (0, 0, 1000, 800), (224, 224)) == 2
    assert crop_decode.dct_scale((1200, 1600), (0, 0, 1600, 1200), (224, 224)) == 4
    assert crop_decode.dct_scale((375, 500), (0, 0, 433, 375), (224, 224)) == 1
    assert crop_decode.dct_scale((375, 500), (0, 0, 100, 100), (224, 224)) == 1  # upsampling
