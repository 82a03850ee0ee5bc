"""FastRandomResizedCrop: load + RandomResizedCrop fused, decoding no more than the crop needs."""
import io
from types import SimpleNamespace
from typing import Optional, Tuple

import mmcv
import numpy as np
from mmcv.image.geometric import cv2_interp_codes, pillow_interp_codes
from mmpretrain.datasets.transforms import RandomResizedCrop
from PIL import Image

from mae_mm.registry import TRANSFORMS
from . import crop_decode
from .loading import LoadImageSafe, jpeg_is_truncated

_EXIF_ORIENTATION = 0x0112
INTERPOLATIONS = dict(pillow=pillow_interp_codes, cv2=cv2_interp_codes)  # mmcv.imresize's
# Reduced-scale decoding keeps 2 pixels of filter support around the box: enough for these.
_DRAFT_INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'box', 'area')


def jpeg_exif_orientation(data: bytes) -> int:
    """The EXIF orientation of JPEG bytes (1 = upright, also when there is none), found by
    walking the marker segments before the first scan (no image data is read)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: no EXIF before the image data
            break
        if marker == 0xE1 and data[pos + 4:pos + 10] == b'Exif\x00\x00':
            return Image.open(io.BytesIO(data)).getexif().get(_EXIF_ORIENTATION, 1)
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], 'big')
    return 1


@TRANSFORMS.register_module()
class FastRandomResizedCrop(RandomResizedCrop):
    """``LoadImageSafe`` + mmpretrain's ``RandomResizedCrop`` in one step, decoding no more of a
    JPEG than the crop needs.

    The crop box is drawn by mmpretrain's own ``rand_crop_params`` (same attempts, scale and
    ratio ranges, centre-crop fallback, same numpy RNG calls), and the crop is resized by the
    same ``mmcv.imresize(interpolation, backend)`` call, so with the defaults the output equals
    ``LoadImageFromFile`` + ``RandomResizedCrop(backend=backend)`` pixel for pixel (tests check
    it for both backends). What changes is the decoding: only the JPEG header is parsed before
    the box is drawn, then only the box is decoded (libjpeg-turbo's crop/skip-scanline API:
    columns outside it are not inverse-transformed, rows below it are not read).

    ``backend`` is mmpretrain's: 'pillow' (the default, as mmpretrain's MAE recipe and the
    official MAE's torchvision/PIL pipeline: antialiased resampling) or 'cv2' (OpenCV, not
    antialiased when shrinking; about 1.8x faster per worker, pixels close, not equal, to
    Pillow's: docs/benchmarks.md gives the difference).

    ``draft=True`` (off by default) decodes a crop at least twice the output size in both
    directions at a reduced DCT scale (1/2, 1/4, 1/8, as Pillow's ``draft``) and resizes from
    there: close to, not equal to, the full-resolution output (the decoder drops the high
    frequencies instead of decoding and filtering them away). With 224 px outputs it applies to
    large photos, never to 500x375 ones.

    Non-JPEG files, EXIF-rotated JPEGs, CMYK JPEGs, or an install without the compiled extension
    take the full-decode path (OpenCV decode as ``LoadImageFromFile``, then the same crop and
    resize): same pixels, slower. A missing extension is logged once per process, when the first
    instance is built, with the package to install.

    Output: ``img`` as uint8 BGR (H, W, 3), like ``LoadImageFromFile`` then the crop, plus
    ``img_shape`` and ``ori_shape`` (the file's (h, w)). A result dict that already holds a
    decoded ``img`` is cropped from it (the array path, for pipelines that load differently).
    An unreadable, corrupt or truncated file is handled as by :class:`LoadImageSafe`.

    Args:
        scale (int | tuple[int, int]): Output (h, w), or one int for a square.
        crop_ratio_range (tuple[float, float]): Crop area / image area range.
        aspect_ratio_range (tuple[float, float]): Crop aspect ratio range.
        max_attempts (int): Draws before the centre-crop fallback.
        interpolation (str): ``mmcv.imresize``'s names for the backend: 'nearest', 'bilinear',
            'bicubic' (MAE's), 'box', 'lanczos', 'hamming' (pillow); 'nearest', 'bilinear',
            'bicubic', 'area', 'lanczos' (cv2).
        backend (str): 'pillow' or 'cv2', the resize library (mmpretrain's argument).
        draft (bool): Allow reduced-scale JPEG decoding when the crop allows it; needs
            backend='pillow', and is ignored for 'lanczos' and 'hamming', whose filters reach
            further than the decoded margin.
        region_decode (bool): Decode only the crop (False: always the full-decode path).
        on_error (str): 'skip' or 'raise', as :class:`LoadImageSafe`.
        check_truncated (bool): Reject JPEGs without an end marker, as :class:`LoadImageSafe`.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self, scale, crop_ratio_range=(0.08, 1.0),
                 aspect_ratio_range=(3. / 4., 4. / 3.), max_attempts: int = 10,
                 interpolation: str = 'bilinear', backend: str = 'pillow', draft: bool = False,
                 region_decode: bool = True, on_error: str = 'skip',
                 check_truncated: bool = True, backend_args: Optional[dict] = None) -> None:
        if backend not in INTERPOLATIONS:
            raise ValueError(f"FastRandomResizedCrop: backend={backend!r} is not valid: use "
                             f"'pillow' (mmpretrain's MAE recipe) or 'cv2'")
        if interpolation not in INTERPOLATIONS[backend]:
            raise ValueError(f'FastRandomResizedCrop: interpolation={interpolation!r} is not '
                             f'valid with backend={backend!r}: use one of '
                             f'{sorted(INTERPOLATIONS[backend])}')
        if draft and backend != 'pillow':
            raise ValueError("FastRandomResizedCrop: draft=True needs backend='pillow' (the crop "
                             "box falls between pixels of the reduced-scale decode, and only "
                             "Pillow resizes a fractional box): set draft=False or "
                             "backend='pillow'")
        super().__init__(scale, crop_ratio_range=crop_ratio_range,
                         aspect_ratio_range=aspect_ratio_range, max_attempts=max_attempts,
                         interpolation=interpolation, backend=backend)
        self.draft = draft and interpolation in _DRAFT_INTERPOLATIONS
        self.region_decode = region_decode
        if region_decode:  # the path that uses the compiled extension
            crop_decode.warn_if_unavailable()  # once per process, naming the package to install
        # Reading, error reporting and skipping are LoadImageSafe's, not re-implemented here.
        self.loader = LoadImageSafe(on_error=on_error, check_truncated=check_truncated,
                                    backend_args=backend_args)

    def _read(self, filename: str, data: Optional[bytes] = None) -> bytes:
        """``data`` (a shard member's bytes) or the file's bytes, checked for truncation."""
        try:
            if data is None:
                data = self.loader._read_bytes(filename)
        except Exception as err:  # backends raise various types for missing/unreadable files
            raise OSError(f'cannot read image file {filename!r}: {type(err).__name__}') from None
        if self.loader.check_truncated and jpeg_is_truncated(data):
            raise OSError(f'image file {filename!r} is a truncated JPEG (no end marker)')
        return data

    def _region_path_allowed(self, data: bytes) -> bool:
        """An upright JPEG and the extension built. OpenCV rotates by the EXIF orientation:
        then the header's size is not the decoded image's, and the full-decode path is taken."""
        return (self.region_decode and crop_decode.available() and data[:2] == b'\xff\xd8'
                and jpeg_exif_orientation(data) == 1)

    def _resize(self, crop: np.ndarray, sub_box=None) -> np.ndarray:
        """Resize ``crop`` to the output size with mmpretrain's call (``mmcv.imresize``), so
        the pixels are its own; or its float ``sub_box``, a reduced-scale decode's, with Pillow."""
        out_h, out_w = self.scale
        if sub_box is None:
            return mmcv.imresize(crop, (out_w, out_h), interpolation=self.interpolation,
                                 backend=self.backend)
        # Pillow's draft + resize(box=...): the box is in fractional pixels of the reduced scale.
        # np.array, not asarray: a writable array, as mmcv.imresize returns.
        return np.array(Image.fromarray(crop).resize(
            (out_w, out_h), pillow_interp_codes[self.interpolation], box=sub_box))

    def _crop_array(self, img: np.ndarray, box=None) -> np.ndarray:
        """Crop a decoded array (the box drawn here unless given) and resize it, as mmpretrain:
        only the crop is resized, and Pillow resamples BGR channels like RGB ones."""
        if box is None:
            offset_h, offset_w, target_h, target_w = self.rand_crop_params(img)
            box = (offset_w, offset_h, offset_w + target_w, offset_h + target_h)
        left, top, right, bottom = box
        return self._resize(img[top:bottom, left:right])

    def _load_crop(self, filename: str,
                   data: Optional[bytes] = None) -> Tuple[np.ndarray, Tuple[int, int]]:
        """Crop of the image (BGR) in ``data``, else in the file at ``filename``, and its (h, w)."""
        data = self._read(filename, data)
        try:
            if self._region_path_allowed(data):
                width, height, components = crop_decode.jpeg_info(data)
                if components in (1, 3):
                    shape = SimpleNamespace(shape=(height, width))  # all rand_crop_params reads
                    offset_h, offset_w, target_h, target_w = self.rand_crop_params(shape)
                    box = (offset_w, offset_h, offset_w + target_w, offset_h + target_h)
                    scale = (crop_decode.dct_scale((height, width), box, self.scale)
                             if self.draft else 1)
                    pixels, sub_box = crop_decode.decode_crop(data, (height, width), box,
                                                              self.scale, scale)
                    return self._resize(pixels, sub_box), (height, width)
            # Full decode with OpenCV, exactly as LoadImageFromFile.
            img = mmcv.imfrombytes(data, flag='color', backend='cv2')
        except Exception as err:  # libjpeg, PIL and OpenCV raise various types for bad data
            raise OSError(f'cannot decode image file {filename!r}: {type(err).__name__}: '
                          f'{str(err).splitlines()[0] if str(err) else ""}') from None
        if img is None:
            raise OSError(f'cannot decode image file {filename!r}: corrupt or not an image')
        return self._crop_array(img), img.shape[:2]

    def transform(self, results: dict) -> Optional[dict]:
        """Crop ``results['img']`` if decoded, else decode ``results['img_bytes']`` (a shard
        member's bytes, removed from ``results``) or load ``results['img_path']``, and crop."""
        if 'img' in results:
            results['img'] = self._crop_array(results['img'])
            results['img_shape'] = results['img'].shape[:2]
            return results
        filename = results['img_path']
        try:
            img, ori_shape = self._load_crop(filename, results.pop('img_bytes', None))
        except OSError as err:
            if self.loader.on_error == 'raise':
                raise OSError(f"{err}: replace or remove the file, or use "
                              f"FastRandomResizedCrop(on_error='skip')") from None
            self.loader._record_skip(filename, str(err))
            return None
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = ori_shape
        return results

    def __repr__(self) -> str:
        return (f'{super().__repr__()[:-1]}, draft={self.draft}, '
                f'region_decode={self.region_decode}, on_error={self.loader.on_error!r})')
