"""Images stored in WebDataset ``.tar`` shards, read with map-style random access.

The shards are plain (uncompressed) tar files, one image per member, as written by
``tools/dataset_converters/images_to_shards.py`` (or any WebDataset writer, after indexing them
with :func:`index_shards`). The index (``index.json`` next to the shards) is a ``wids`` shard
list (``shardlist`` of ``url`` + ``nsamples``, so ``wids.ShardListDataset`` reads it too) with,
per shard, the byte offset and size of every member found by Python's ``tarfile``. With it a
sample is one read of its bytes: the data set is an ordinary map-style data set of known
length, so mmengine's samplers, epochs, ``auto_scale_lr`` and exact resume work unchanged.
The shards may be local, on an HTTP(S) server (one ``Range`` request per member) or on any
mmengine file backend (each shard fetched whole once into a local cache).
"""
import fcntl
import hashlib
import json
import os
import os.path as osp
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Union
from urllib.parse import quote

import mmengine.fileio as fileio
from mmengine.dataset import BaseDataset
from mmengine.fileio.backends import HTTPBackend, LocalBackend
from mmengine.logging import MMLogger

from mae_mm.registry import DATASETS
from .http_reads import (DownloadError, HttpPolicy, first_line, http_range, http_size,
                         http_whole, is_http, reason)
from .image_folder import IMG_EXTENSIONS, RefetchNamingFailures, _is_uri, _normalize_extensions

INDEX_KIND = 'wids-shard-index-v1'
INDEX_NAME = 'index.json'
WRITER = 'python tools/dataset_converters/images_to_shards.py SRC DST'


def _stale(path: str, size: int, recorded: int, index: str = 'its index') -> ValueError:
    return ValueError(f'shard {path!r} is {size} bytes but {index} records {recorded}: the index '
                      f'is stale; re-index the shards with {WRITER}')


def pread_bytes(path: str, offset: int, size: int) -> bytes:
    """``size`` bytes of the local file ``path`` from ``offset`` (fewer at its end)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


def cached_copy(uri: str, cache_dir: str, size: Optional[int] = None,
                backend_args: Optional[dict] = None, policy: HttpPolicy = HttpPolicy()) -> str:
    """The path of a local copy of ``uri`` in ``cache_dir``, fetched whole (``mmengine.fileio.get``;
    :func:`http_whole` with ``policy`` for plain HTTP) unless a copy of ``size`` bytes (any, if
    None) is there.

    The copy is written under a temporary name and renamed, while holding an exclusive lock on
    ``<copy>.lock``: data-loader workers and ranks sharing the folder never read half a file and
    fetch each shard once. A failed download raises :class:`DownloadError`, a download of
    another size than ``size`` ``ValueError`` (a stale index), a failed write ``OSError``.
    """
    name = hashlib.sha1(uri.encode()).hexdigest()[:16] + '-' + uri.rstrip('/').rsplit('/', 1)[-1]
    path = osp.join(cache_dir, name)

    def ready() -> bool:
        return osp.isfile(path) and (size is None or osp.getsize(path) == size)

    if ready():
        return path
    os.makedirs(cache_dir, exist_ok=True)
    with open(f'{path}.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not ready():
            if is_http(uri) and not backend_args:
                data = http_whole(uri, policy)
            else:
                try:
                    data = fileio.get(uri, backend_args=backend_args)
                except Exception as err:  # backends raise various types
                    raise DownloadError(uri, first_line(err)) from None
            if size is not None and len(data) != size:
                raise _stale(uri, len(data), size)
            tmp = f'{path}.{os.getpid()}.tmp'
            with open(tmp, 'wb') as f:
                f.write(data)
            os.replace(tmp, path)
    return path


def tar_members(path: str, extensions: Sequence[str] = IMG_EXTENSIONS) -> List[list]:
    """``[[name, offset, size], ...]`` of the regular-file members of a tar whose names end
    with one of ``extensions`` (case-insensitive), in archive order; ``offset`` is where the
    member's bytes start. Read with Python's ``tarfile`` (headers only, no member data)."""
    extensions = tuple(e.lower() for e in extensions)
    with tarfile.open(path, 'r:') as tar:
        return [[m.name, m.offset_data, m.size] for m in tar
                if m.isreg() and m.name.lower().endswith(extensions)]


def index_shards(shard_paths: Sequence[str], index_path: str,
                 extensions: Sequence[str] = IMG_EXTENSIONS, **info) -> dict:
    """Write the index of ``shard_paths`` (tar files, in sample order) to ``index_path``.

    Shard ``url`` entries are stored relative to the index's folder. ``info`` is stored under
    ``'mae_mm'`` (the writer's options). The file is written to a temporary name and renamed,
    so a reader never sees half an index.

    Returns:
        dict: The index.
    """
    root = osp.dirname(osp.abspath(index_path))
    shardlist = []
    for path in shard_paths:
        members = tar_members(path, extensions)
        shardlist.append(dict(url=osp.relpath(osp.abspath(path), root).replace(os.sep, '/'),
                              nsamples=len(members), filesize=osp.getsize(path),
                              members=members))
    index = {'__kind__': INDEX_KIND, 'wids_version': 1, 'name': osp.basename(root),
             'shardlist': shardlist, 'mae_mm': info}
    tmp = f'{index_path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(index, f, separators=(',', ':'))
    os.replace(tmp, index_path)
    return index


@DATASETS.register_module()
class WebDatasetShards(RefetchNamingFailures, BaseDataset):
    """Unlabelled images in WebDataset ``.tar`` shards, for MAE pre-training.

    ``data_root`` is the folder written by ``tools/dataset_converters/images_to_shards.py``:
    ``shard-000000.tar``, ``shard-000001.tar``, ... and ``index.json``. Samples are the members
    in index order (the writer keeps the sorted order of the source folder, so a shard data set
    and an ``ImageFolder`` of the same images have the same sample ids). Each data info holds
    ``img_path`` (``'<data_root>/shard-000000.tar#relative/name.jpg'``); the pipeline receives
    the member's bytes as ``img_bytes``, which ``LoadImageSafe`` and ``FastRandomResizedCrop``
    decode as they decode files, and skip and count a corrupt or truncated member as a corrupt file.

    The index is read with ``mmengine.fileio.get`` (plain HTTP: with urllib, retried as the
    members are); the backend (mmengine's rule:
    ``backend_args['backend']``, else the prefix of ``data_root``) decides how a member is read:
    from a local (or mounted) folder, one ``os.pread`` at its offset; from an ``http(s)://`` URL,
    one HTTP ``Range`` request; from any other backend (mmengine's have no byte-range ``get``),
    its shard is fetched whole once into ``cache_dir`` (required), then read as a local shard.
    HTTP requests that fail for a reason that may pass are retried (``http_retries``); a member
    whose download still fails is skipped and counted as a corrupt member.

    ``data_prefix`` and ``with_label`` are ``ImageFolder``'s, so a recipe switches from a folder
    to shards by changing ``type`` and ``data_root`` alone.

    Args:
        data_root (str): Folder (or URL) of the shards and their index.
        data_prefix (str | dict): Subfolder of ``data_root`` holding them; '' (default) for
            ``data_root`` itself.
        with_label (bool): Must be False: the shard data set is unlabelled (pre-training).
        ann_file (str): The index, relative to ``data_root/data_prefix``. Defaults to
            'index.json'.
        extensions (Sequence[str]): Member suffixes taken as images. Defaults to
            ``IMG_EXTENSIONS``.
        pipeline (Sequence[dict | Callable]): Data transforms. Defaults to ().
        test_mode (bool): Evaluation data set (no refetch of failed samples). Defaults to False.
        indices (int | Sequence[int], optional): Keep only these samples (see BaseDataset).
        serialize_data (bool): Store the data list as one numpy buffer. Defaults to True.
        lazy_init (bool): Defer reading the index to ``full_init``. Defaults to False.
        max_refetch (int): Maximum number of other samples tried when the pipeline returns
            None (a corrupt member skipped by ``LoadImageSafe``). Defaults to 1000.
        backend_args (dict, optional): mmengine file backend arguments of the index and the
            shards, e.g. ``dict(backend='petrel')``. Defaults to None.
        cache_dir (str, optional): Local folder for the shards of backends other than local and
            HTTP (with HTTP: whole shards instead of ranges). It must hold the shards read (the
            data set after one epoch); workers, ranks and runs may share it. Defaults to None.
        http_retries (int): Further attempts of an HTTP request after a transient failure
            (refused or reset connection, timeout, HTTP 408/429/5xx); a member that still fails
            is skipped and counted. Defaults to 30, with ``http_retry_delay``: webdataset's
            ``curl --retry 30 --retry-delay 2``.
        http_retry_delay (float): Seconds between those attempts. Defaults to 2.0.
    """

    def __init__(self,
                 data_root: str,
                 data_prefix: Union[str, dict] = '',
                 with_label: bool = False,
                 ann_file: str = INDEX_NAME,
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 metainfo: Optional[dict] = None,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 backend_args: Optional[dict] = None,
                 cache_dir: Optional[str] = None,
                 http_retries: int = 30,
                 http_retry_delay: float = 2.0) -> None:
        self.extensions = _normalize_extensions(extensions)
        self._field = 'val_dataloader.dataset' if test_mode else 'train_dataloader.dataset'
        for name, value in (('http_retries', http_retries), ('http_retry_delay', http_retry_delay)):
            if value < 0:
                raise ValueError(f'{self._field}.{name}={value}: give 0 or more (0: no retry / '
                                 f'no wait)')
        self.http_policy = HttpPolicy(retries=int(http_retries), retry_delay=http_retry_delay)
        if with_label:
            raise ValueError(f'{self._field}.with_label=True: WebDatasetShards reads unlabelled '
                             f'images (pre-training); set with_label=False, or use ImageFolder '
                             f'for labels')
        if isinstance(data_prefix, dict):
            data_prefix = data_prefix.get('img_path', data_prefix.get('img', ''))
        self.backend_args, self.cache_dir = backend_args, cache_dir
        if _is_uri(data_root or ''):
            folder = data_root.rstrip('/') + ('/' + data_prefix if data_prefix else '')
            index = ann_file if _is_uri(ann_file) or osp.isabs(ann_file) else f'{folder}/{ann_file}'
        else:
            folder = osp.join(data_root or '', data_prefix or '')
            index = osp.abspath(ann_file if osp.isabs(ann_file) else osp.join(folder, ann_file))
        backend = type(fileio.get_file_backend(index, backend_args=backend_args))
        self._kind = ('local' if backend is LocalBackend else
                      'http' if backend is HTTPBackend and not cache_dir else 'cache')
        if self._kind == 'local' and not osp.isfile(index):
            raise FileNotFoundError(self._index_error(index, 'does not exist'))
        if self._kind == 'cache' and not cache_dir:
            raise ValueError(
                f'shards on {backend.__name__} ({index!r}) are fetched whole into a local cache: '
                f'set {self._field}.cache_dir to a local folder with room for the data set (HTTP '
                f'and local shards need none)')
        self._shards: List[str] = []
        self._sizes: List[Optional[int]] = []
        super().__init__(ann_file=index, metainfo=metainfo,
                         data_root='' if _is_uri(index) else data_root,
                         pipeline=list(pipeline), test_mode=test_mode, indices=indices,
                         serialize_data=serialize_data, lazy_init=lazy_init,
                         max_refetch=max_refetch)

    def _index_error(self, index: str, what: str) -> str:
        return (f'shard index {index!r} {what}: set {self._field}.data_root to the folder (or URL) '
                f'written by {WRITER} (and ann_file to its index, {INDEX_NAME!r}), or write the '
                f'shards with that command')

    def load_data_list(self) -> List[dict]:
        """Read the index into ``[dict(shard, offset, nbytes, member)]``; check the shards."""
        try:
            if is_http(self.ann_file) and not self.backend_args:
                text = http_whole(self.ann_file, self.http_policy)
            else:
                text = fileio.get(self.ann_file, backend_args=self.backend_args)
        except Exception as err:  # DownloadError, the backends' own types
            raise FileNotFoundError(
                self._index_error(self.ann_file, f'cannot be read ({reason(err)})')) from None
        try:
            shardlist = json.loads(text)['shardlist']
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f'shard index {self.ann_file!r} is not a {INDEX_KIND} index ({type(err).__name__}'
                f'): rewrite it with {WRITER}') from None
        root = self.ann_file.rsplit('/', 1)[0] if _is_uri(self.ann_file) else osp.dirname(
            self.ann_file)
        data_list, self._shards, self._sizes = [], [], []
        for shard_id, shard in enumerate(shardlist):
            url = shard['url']
            if _is_uri(url) or not _is_uri(root):
                path = url if _is_uri(url) else osp.normpath(osp.join(root, url))
            else:
                path = f'{root}/{quote(url) if is_http(root) else url}'
            if 'members' not in shard:
                raise ValueError(
                    f'shard index {self.ann_file!r} has no member offsets for {path!r} (a '
                    f'plain wids index): re-index the shards with '
                    f'mae_mm.datasets.webdataset_shards.index_shards or {WRITER}')
            self._shards.append(path)
            self._sizes.append(shard.get('filesize'))
            for name, offset, nbytes in shard['members']:
                if name.lower().endswith(self.extensions):
                    data_list.append(dict(shard=shard_id, offset=offset, nbytes=nbytes,
                                          member=name))
        with ThreadPoolExecutor(16) as pool:  # remote: one request per shard, overlapped
            found = list(pool.map(self._shard_size, self._shards))
        for path, size, recorded in zip(self._shards, found, self._sizes):
            if None not in (size, recorded) and size != recorded:
                raise _stale(path, size, recorded, repr(self.ann_file))
        if not data_list:
            raise FileNotFoundError(
                f'shard index {self.ann_file!r} lists no members with extensions '
                f'{self.extensions}: write the shards with {WRITER}, or extend '
                f'{self._field}.extensions')
        return data_list

    def _shard_size(self, path: str) -> Optional[int]:
        """The size of a shard (None where its backend cannot tell); a one-line
        ``FileNotFoundError`` if it is missing. Remote: a HEAD request, or ``exists``."""
        try:
            if self._kind == 'local':
                if not osp.isfile(path):
                    raise FileNotFoundError(path)
                return osp.getsize(path)
            if is_http(path) and not self.backend_args:  # HEAD: existence and size
                return http_size(path, self.http_policy)
            backend = fileio.get_file_backend(path, backend_args=self.backend_args,
                                              enable_singleton=True)
            if hasattr(backend, 'exists') and not backend.exists(path):
                raise FileNotFoundError(path)
            return None
        except Exception as err:  # DownloadError, the backend's own types
            what = ('does not exist' if isinstance(err, FileNotFoundError) else
                    f'cannot be read ({reason(err)})')
            raise FileNotFoundError(
                f'shard {path!r} listed in {self.ann_file!r} {what}: copy it back, or re-run '
                f'{WRITER} (it resumes) to rewrite the shards and index') from None

    @property
    def shard_paths(self) -> List[str]:
        """The shard files (paths or URIs), in index order."""
        return list(self._shards)

    def get_data_info(self, idx: int) -> dict:
        """The data info of sample ``idx``, with ``img_path`` ``'shard.tar#member'``."""
        info = super().get_data_info(idx)
        info['img_path'] = f"{self._shards[info['shard']]}#{info['member']}"
        return info

    def read_bytes(self, info: dict) -> bytes:
        """The member's bytes (fewer than recorded when the shard file was cut short).
        Raises :class:`DownloadError` when a remote read fails."""
        path, offset, nbytes = self._shards[info['shard']], info['offset'], info['nbytes']
        if self._kind == 'http':
            return http_range(path, offset, nbytes, self.http_policy)
        if self._kind == 'cache':
            path = cached_copy(path, self.cache_dir, self._sizes[info['shard']], self.backend_args,
                               self.http_policy)
        return pread_bytes(path, offset, nbytes)

    def prepare_data(self, idx: int):
        """Read the member's bytes, then run the pipeline on them."""
        info = self.get_data_info(idx)
        try:
            info['img_bytes'] = self.read_bytes(info)
        except DownloadError as err:  # empty bytes: LoadImageSafe skips and counts the member
            MMLogger.get_current_instance().warning(
                f'{err}: skipping {info["img_path"]!r} as an unreadable image')
            info['img_bytes'] = b''
        except OSError as err:
            if self._kind == 'cache':  # the cache, not the source: stop rather than skip all
                raise RuntimeError(
                    f'cannot use {self._field}.cache_dir={self.cache_dir!r} ({first_line(err)}):'
                    f' give it room for the data set, or choose another folder') from None
            # local: shard gone since the index was read; LoadImageSafe reports the path
        return self.pipeline(info)

    def unreadable_sample_fix(self) -> str:
        return 'rewrite the shard without it'

    def unreadable_samples_hint(self) -> str:
        return (f'are the shards indexed by {self.ann_file!r} unreadable?): check them with '
                f'{WRITER} --verify')
