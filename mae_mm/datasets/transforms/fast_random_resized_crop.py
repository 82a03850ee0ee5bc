"""FastRandomResizedCrop: load + RandomResizedCrop fused, decoding no more than the crop needs."""
import io
from types import SimpleNamespace
from typing import Optional, Tuple

import mmcv
import numpy as np
from mmpretrain.datasets.transforms import RandomResizedCrop
from PIL import Image

from mae_mm.registry import TRANSFORMS
from . import crop_decode
from .loading import LoadImageSafe, jpeg_is_truncated

_EXIF_ORIENTATION = 0x0112
_PIL_FILTERS = dict(nearest=Image.NEAREST, bilinear=Image.BILINEAR, bicubic=Image.BICUBIC,
                    area=Image.BOX, lanczos=Image.LANCZOS)


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
    """``LoadImageSafe`` + ``mmpretrain.RandomResizedCrop(backend='pillow')`` in one step.

    The crop box is drawn by mmpretrain's own ``rand_crop_params`` (same attempts, scale and
    ratio ranges, centre-crop fallback, same numpy RNG calls), so the augmentation distribution
    is the mmpretrain one by construction. What changes is the work around it:

    - only the JPEG header is parsed before the box is drawn;
    - only the box is decoded (libjpeg-turbo's crop/skip-scanline decoding: columns outside it
      are not inverse-transformed, rows below it are not read), and it is resized by a
      compiled, vectorised copy of Pillow's bicubic. Both are pixel-exact: the output equals
      ``LoadImageFromFile`` + ``RandomResizedCrop(backend='pillow')`` (tests check it);
    - with ``draft=True``, a crop at least twice the output size in both directions is decoded
      at a reduced DCT scale (1/2, 1/4, 1/8, as Pillow's ``draft``) and resized from there:
      close to, not equal to, the full-resolution output (the decoder drops the high
      frequencies instead of decoding and filtering them away). With 224 px outputs it applies
      to large photos, never to 500x375 ones.

    Non-JPEG files, EXIF-rotated JPEGs, CMYK JPEGs, other interpolations, or an install without
    the compiled extension take the full-decode path (OpenCV decode as ``LoadImageFromFile``,
    Pillow-exact resize): same pixels, slower. A missing extension is logged once per process,
    when the first bicubic instance is built, with the package to install.

    Output: ``img`` as uint8 BGR (H, W, 3), like ``LoadImageFromFile`` then the crop, plus
    ``img_shape`` and ``ori_shape`` (the file's (h, w)). A result dict that already holds a
    decoded ``img`` is cropped from it (the array path, for pipelines that load differently).
    An unreadable, corrupt or truncated file is handled as by :class:`LoadImageSafe`.

    Args:
        scale (int | tuple[int, int]): Output (h, w), or one int for a square.
        crop_ratio_range (tuple[float, float]): Crop area / image area range.
        aspect_ratio_range (tuple[float, float]): Crop aspect ratio range.
        max_attempts (int): Draws before the centre-crop fallback.
        interpolation (str): 'nearest', 'bilinear', 'bicubic', 'area' or 'lanczos'; only
            'bicubic' (MAE's) takes the region path.
        draft (bool): Allow reduced-scale JPEG decoding when the crop allows it.
        region_decode (bool): Decode only the crop (False: always the full-decode path).
        on_error (str): 'skip' or 'raise', as :class:`LoadImageSafe`.
        check_truncated (bool): Reject JPEGs without an end marker, as :class:`LoadImageSafe`.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self, scale, crop_ratio_range=(0.08, 1.0),
                 aspect_ratio_range=(3. / 4., 4. / 3.), max_attempts: int = 10,
                 interpolation: str = 'bilinear', draft: bool = True, region_decode: bool = True,
                 on_error: str = 'skip',
                 check_truncated: bool = True, backend_args: Optional[dict] = None) -> None:
        if interpolation not in _PIL_FILTERS:
            raise ValueError(f'FastRandomResizedCrop: interpolation={interpolation!r} is not '
                             f'valid: use one of {sorted(_PIL_FILTERS)}')
        super().__init__(scale, crop_ratio_range=crop_ratio_range,
                         aspect_ratio_range=aspect_ratio_range, max_attempts=max_attempts,
                         interpolation=interpolation, backend='pillow')
        self.draft = draft
        self.region_decode = region_decode
        if interpolation == 'bicubic':  # the paths that use the compiled extension
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
        """An upright JPEG, bicubic output, and the extension built. OpenCV rotates by the EXIF
        orientation: then the header's size is not the decoded image's, and the full-decode
        path is taken."""
        return (self.region_decode and self.interpolation == 'bicubic'
                and crop_decode.available() and data[:2] == b'\xff\xd8'
                and jpeg_exif_orientation(data) == 1)

    def _resize(self, crop: np.ndarray) -> np.ndarray:
        if self.interpolation == 'bicubic':
            return crop_decode.resize_bicubic(crop, self.scale)
        out_h, out_w = self.scale
        return np.asarray(Image.fromarray(crop).resize((out_w, out_h),
                                                       _PIL_FILTERS[self.interpolation]))

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
                    img = crop_decode.decode_crop_resized(data, (height, width), box,
                                                          self.scale, scale)
                    return img, (height, width)
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
