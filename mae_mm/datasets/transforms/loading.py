"""Image loading that skips unreadable files instead of stopping a long pre-training run."""
import multiprocessing
import threading
from typing import Optional

import mmcv
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import MMLogger

from mae_mm.registry import TRANSFORMS

_lock = threading.Lock()


def jpeg_is_truncated(img_bytes: bytes) -> bool:
    """Whether JPEG bytes end before their last scan is closed by an EOI marker.

    Some decoders (OpenCV 4, Pillow with ``LOAD_TRUNCATED_IMAGES=True``) return a partly grey
    image for a truncated JPEG without any error. Inside entropy-coded data ``0xFF`` is always
    followed by ``0x00`` or a restart marker, so a complete file has an EOI (``FFD9``) after its
    last start-of-scan (``FFDA``); the check is two ``rfind`` calls, negligible next to decoding.

    Args:
        img_bytes (bytes): File content.

    Returns:
        bool: True for a JPEG without EOI after its last scan; False otherwise (and for
        non-JPEG data).
    """
    if not img_bytes.startswith(b'\xff\xd8'):
        return False
    return img_bytes.rfind(b'\xff\xd9') < img_bytes.rfind(b'\xff\xda')


@TRANSFORMS.register_module()
class LoadImageSafe(LoadImageFromFile):
    """``LoadImageFromFile`` that skips a missing, unreadable, corrupt or truncated image.

    With ``on_error='skip'`` a failed image logs a warning naming the file (once per file and
    process) with the number of images skipped so far, increments the counters and returns None:
    mmengine's ``BaseDataset.__getitem__`` then loads another, random, sample (up to
    ``max_refetch`` times) in training; in ``test_mode`` it raises. With ``on_error='raise'`` the
    failure raises a one-line ``OSError`` naming the file.

    Counters: :attr:`num_skipped` counts in this process; a second counter in shared memory,
    created with the first ``LoadImageSafe`` (in the training process, before the data-loader
    workers are forked), adds up the training process and all its workers, so that the count in
    the log and :func:`skipped_image_count` are the whole rank's, whatever ``num_workers``.

    Required keys: ``img_path``. Optional: ``img_bytes`` (the image's bytes, given by a data set
    that reads them itself, e.g. :class:`WebDatasetShards`; decoded instead of reading
    ``img_path``, which then only names the image in messages). Added keys: ``img``,
    ``img_shape``, ``ori_shape``.

    Args:
        on_error (str): ``'skip'`` or ``'raise'``. Defaults to 'skip'.
        check_truncated (bool): Also reject JPEGs that end before their EOI marker (see
            :func:`jpeg_is_truncated`), which some decoders accept silently. Defaults to True.
        **kwargs: Arguments of mmcv ``LoadImageFromFile`` (``to_float32``, ``color_type``,
            ``imdecode_backend``, ``backend_args``, ...). ``ignore_empty=True`` keeps its mmcv
            meaning (return None silently, nothing counted).
    """

    #: Number of images skipped so far in this process.
    num_skipped: int = 0
    _warned: set = set()
    #: The rank's count, shared with forked data-loader workers (None until the first instance,
    #: or where shared memory is unavailable).
    _rank_count = None

    def __init__(self, on_error: str = 'skip', check_truncated: bool = True, **kwargs) -> None:
        if on_error not in ('skip', 'raise'):
            raise ValueError(f"LoadImageSafe: on_error={on_error!r} is not valid: use 'skip' or "
                             f"'raise'")
        super().__init__(**kwargs)
        self.on_error = on_error
        self.check_truncated = check_truncated
        if LoadImageSafe._rank_count is None:
            try:
                LoadImageSafe._rank_count = multiprocessing.Value('q', 0)
            except OSError:  # no shared memory (some sandboxes): per-process counts only
                pass

    def _read_bytes(self, filename: str) -> bytes:
        if self.file_client_args is not None:
            client = fileio.FileClient.infer_client(self.file_client_args, filename)
            data = client.get(filename)
        else:
            data = fileio.get(filename, backend_args=self.backend_args)
        if data is None:  # mmengine's LmdbBackend returns None for a key it does not hold
            raise FileNotFoundError(f'no image under the key {filename!r} in the database')
        return data

    def _decode(self, filename: str, img_bytes: Optional[bytes] = None) -> np.ndarray:
        """Decode ``img_bytes``, read from ``filename`` when None; any failure raises
        ``OSError`` with the reason."""
        try:
            if img_bytes is None:
                img_bytes = self._read_bytes(filename)
        except Exception as err:  # backends raise various types for missing/unreadable files
            raise OSError(f'cannot read image file {filename!r}: {type(err).__name__}: '
                          f'{str(err).splitlines()[0] if str(err) else ""}') from None
        if self.check_truncated and jpeg_is_truncated(img_bytes):
            raise OSError(f'image file {filename!r} is a truncated JPEG (no end marker)')
        try:
            img = mmcv.imfrombytes(img_bytes, flag=self.color_type,
                                   backend=self.imdecode_backend)
        except Exception as err:  # pillow/turbojpeg raise their own types
            raise OSError(f'cannot decode image file {filename!r}: {type(err).__name__}: '
                          f'{str(err).splitlines()[0] if str(err) else ""}') from None
        if img is None or img.size == 0:
            raise OSError(f'cannot decode image file {filename!r}: corrupt, truncated or not an '
                          f'image ({len(img_bytes)} bytes)')
        return img

    def transform(self, results: dict) -> Optional[dict]:
        """Decode ``results['img_bytes']`` (a shard member's bytes, removed from ``results``)
        or load ``results['img_path']``; None when it fails and ``on_error='skip'``."""
        filename = results['img_path']
        try:
            img = self._decode(filename, results.pop('img_bytes', None))
        except OSError as err:
            if self.ignore_empty:
                return None
            if self.on_error == 'raise':
                raise OSError(f"{err}: replace or remove the file, or use "
                              f"LoadImageSafe(on_error='skip')") from None
            self._record_skip(filename, str(err))
            return None
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    @classmethod
    def _record_skip(cls, filename: str, reason: str) -> None:
        with _lock:
            LoadImageSafe.num_skipped += 1
            first_time = filename not in LoadImageSafe._warned
            LoadImageSafe._warned.add(filename)
        shared = LoadImageSafe._rank_count
        if shared is not None:
            with shared.get_lock():
                shared.value += 1
        count, where = ((shared.value, 'on this rank') if shared is not None else
                        (LoadImageSafe.num_skipped, 'in this process'))
        if first_time:
            MMLogger.get_current_instance().warning(
                f'skipping unreadable image ({count} skipped so far {where}): {reason}')

    def __repr__(self) -> str:
        return (f"{super().__repr__()[:-1]}, on_error='{self.on_error}', "
                f'check_truncated={self.check_truncated})')


def skipped_image_count() -> int:
    """How many images :class:`LoadImageSafe` has skipped on this rank: in this process and its
    forked data-loader workers (in this process only where shared memory is unavailable)."""
    shared = LoadImageSafe._rank_count
    return shared.value if shared is not None else LoadImageSafe.num_skipped


def reset_skipped_image_count() -> None:
    """Reset the skip counters and the set of already-reported files (e.g. between tests)."""
    with _lock:
        LoadImageSafe.num_skipped = 0
        LoadImageSafe._warned.clear()
    if LoadImageSafe._rank_count is not None:
        with LoadImageSafe._rank_count.get_lock():
            LoadImageSafe._rank_count.value = 0
