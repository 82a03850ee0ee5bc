"""FastRandomResizedCrop: load + RandomResizedCrop fused, decoding no more than the crop needs."""
import io
import math
from types import SimpleNamespace
from typing import Optional, Tuple

import mmcv
import numpy as np
from mmpretrain.datasets.transforms import RandomResizedCrop
from PIL import Image

from mae_mm.registry import TRANSFORMS
from .loading import LoadImageSafe, jpeg_is_truncated

_EXIF_ORIENTATION = 0x0112
_PIL_FILTERS = dict(nearest=Image.NEAREST, bilinear=Image.BILINEAR, bicubic=Image.BICUBIC,
                    area=Image.BOX, lanczos=Image.LANCZOS)


@TRANSFORMS.register_module()
class FastRandomResizedCrop(RandomResizedCrop):
    """``LoadImageSafe`` + ``mmpretrain.RandomResizedCrop(backend='pillow')`` in one step.

    The crop box is drawn by mmpretrain's own ``rand_crop_params`` (same attempts, scale and
    ratio ranges, centre-crop fallback, same numpy RNG calls), so the augmentation distribution
    is the mmpretrain one by construction. What changes is the work around it:

    - the image is read from ``img_path`` and only its header is parsed before the box is drawn;
    - a JPEG whose crop, at a reduced DCT scale (1/2, 1/4, 1/8), is still at least the output
      size in both directions is decoded at that scale by Pillow (libjpeg's draft mode: the
      decoder skips the high frequencies instead of decoding them and filtering them away), and
      the box is rescaled accordingly;
    - otherwise the image is decoded in full by OpenCV exactly as ``LoadImageFromFile`` does, so
      the output is the mmpretrain pipeline's, pixel for pixel.

    The reduced-scale path needs a crop at least twice the output size: with 224 px outputs it
    applies to large photos, never to 500x375 ones (ImageNet's typical size), where the work
    left is the full decode and the bicubic resize that mmpretrain does as well (measured:
    docs/benchmarks.md).

    Output: ``img`` as uint8 BGR (H, W, 3), like ``LoadImageFromFile`` then the crop, plus
    ``img_shape`` and ``ori_shape`` (the file's (h, w)). A result dict that already holds a
    decoded ``img`` is cropped from it (the array path, for pipelines that load differently).
    An unreadable, corrupt or truncated file is handled as by :class:`LoadImageSafe`.

    Args:
        scale (int | tuple[int, int]): Output (h, w), or one int for a square.
        crop_ratio_range (tuple[float, float]): Crop area / image area range.
        aspect_ratio_range (tuple[float, float]): Crop aspect ratio range.
        max_attempts (int): Draws before the centre-crop fallback.
        interpolation (str): 'nearest', 'bilinear', 'bicubic', 'area' or 'lanczos'.
        draft (bool): Allow reduced-scale JPEG decoding when the crop allows it.
        on_error (str): 'skip' or 'raise', as :class:`LoadImageSafe`.
        check_truncated (bool): Reject JPEGs without an end marker, as :class:`LoadImageSafe`.
        backend_args (dict, optional): mmengine file backend arguments.
    """

    def __init__(self, scale, crop_ratio_range=(0.08, 1.0),
                 aspect_ratio_range=(3. / 4., 4. / 3.), max_attempts: int = 10,
                 interpolation: str = 'bilinear', draft: bool = True, on_error: str = 'skip',
                 check_truncated: bool = True, backend_args: Optional[dict] = None) -> None:
        if interpolation not in _PIL_FILTERS:
            raise ValueError(f'FastRandomResizedCrop: interpolation={interpolation!r} is not '
                             f'valid: use one of {sorted(_PIL_FILTERS)}')
        super().__init__(scale, crop_ratio_range=crop_ratio_range,
                         aspect_ratio_range=aspect_ratio_range, max_attempts=max_attempts,
                         interpolation=interpolation, backend='pillow')
        self.draft = draft
        # Reading, error reporting and skipping are LoadImageSafe's, not re-implemented here.
        self.loader = LoadImageSafe(on_error=on_error, check_truncated=check_truncated,
                                    backend_args=backend_args)

    def _read(self, filename: str) -> bytes:
        try:
            data = self.loader._read_bytes(filename)
        except Exception as err:  # backends raise various types for missing/unreadable files
            raise OSError(f'cannot read image file {filename!r}: {type(err).__name__}') from None
        if self.loader.check_truncated and jpeg_is_truncated(data):
            raise OSError(f'image file {filename!r} is a truncated JPEG (no end marker)')
        return data

    def _may_draft(self, image: Image.Image, data: bytes) -> bool:
        """Colour JPEG, upright (OpenCV rotates by EXIF orientation: then the header's size is
        not the decoded image's, and the full-decode path is taken)."""
        if not (self.draft and image.format == 'JPEG' and image.mode == 'RGB'):
            return False
        # Parsing EXIF costs more than finding out that there is none.
        return (b'Exif' not in data[:65536]
                or image.getexif().get(_EXIF_ORIENTATION, 1) == 1)

    def _draft_scale_size(self, image: Image.Image, box) -> Optional[Tuple[int, int]]:
        """The size to ask ``draft`` for when a reduced DCT scale keeps the crop at least the
        output size in both directions, else None (decode in full)."""
        out_h, out_w = self.scale
        left, top, right, bottom = box
        width, height = image.size
        need = (math.ceil(width * out_w / (right - left)),
                math.ceil(height * out_h / (bottom - top)))
        return need if width >= 2 * need[0] and height >= 2 * need[1] else None

    def _resize(self, image: Image.Image, box) -> np.ndarray:
        """Resize the region ``box`` (float, in ``image``'s pixels) of a draft-decoded image."""
        out_h, out_w = self.scale
        return np.array(image.resize((out_w, out_h), _PIL_FILTERS[self.interpolation], box=box))

    def _crop_array(self, img: np.ndarray, box=None) -> np.ndarray:
        """Crop a decoded array (the box drawn here unless given) and resize it, as mmpretrain:
        only the crop goes to Pillow, and Pillow resamples BGR channels like RGB ones."""
        if box is None:
            offset_h, offset_w, target_h, target_w = self.rand_crop_params(img)
            box = (offset_w, offset_h, offset_w + target_w, offset_h + target_h)
        left, top, right, bottom = box
        out_h, out_w = self.scale
        crop = Image.fromarray(img[top:bottom, left:right])
        return np.array(crop.resize((out_w, out_h), _PIL_FILTERS[self.interpolation]))

    def _load_crop(self, filename: str) -> Tuple[np.ndarray, Tuple[int, int]]:
        """Crop of the file at ``filename`` (BGR) and the image's (h, w)."""
        data = self._read(filename)
        try:
            image = Image.open(io.BytesIO(data))  # parses the header only
            width, height = image.size
            box = None
            if self._may_draft(image, data):
                shape = SimpleNamespace(shape=(height, width))  # all rand_crop_params reads
                offset_h, offset_w, target_h, target_w = self.rand_crop_params(shape)
                box = (offset_w, offset_h, offset_w + target_w, offset_h + target_h)
                need = self._draft_scale_size(image, box)
                if need is not None:
                    image.draft('RGB', need)
                    fx, fy = image.size[0] / width, image.size[1] / height
                    scaled = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
                    return np.ascontiguousarray(self._resize(image, scaled)[..., ::-1]), \
                        (height, width)
            # Full decode with OpenCV, exactly as LoadImageFromFile (faster than Pillow's, and
            # it applies the EXIF orientation the same way).
            img = mmcv.imfrombytes(data, flag='color', backend='cv2')
        except Exception as err:  # PIL and OpenCV raise various types for bad data
            raise OSError(f'cannot decode image file {filename!r}: {type(err).__name__}: '
                          f'{str(err).splitlines()[0] if str(err) else ""}') from None
        if img is None:
            raise OSError(f'cannot decode image file {filename!r}: corrupt or not an image')
        if box is not None and img.shape[:2] != (height, width):
            box = None  # decoded size differs from the header's: draw on the decoded image
        return self._crop_array(img, box), img.shape[:2]

    def transform(self, results: dict) -> Optional[dict]:
        """Crop ``results['img']`` if decoded, else load ``results['img_path']`` and crop."""
        if 'img' in results:
            results['img'] = self._crop_array(results['img'])
            results['img_shape'] = results['img'].shape[:2]
            return results
        filename = results['img_path']
        try:
            img, ori_shape = self._load_crop(filename)
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
        return f'{super().__repr__()[:-1]}, draft={self.draft}, on_error={self.loader.on_error!r})'
