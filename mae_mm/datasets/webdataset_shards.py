"""Images stored in WebDataset ``.tar`` shards, read with map-style random access.

The shards are plain (uncompressed) tar files, one image per member, as written by
``tools/dataset_converters/images_to_shards.py`` (or any WebDataset writer, after indexing them
with :func:`index_shards`). The index (``index.json`` next to the shards) is a ``wids`` shard
list (``shardlist`` of ``url`` + ``nsamples``, so ``wids.ShardListDataset`` reads it too) with,
per shard, the byte offset and size of every member found by Python's ``tarfile``. With it a
sample is one ``pread`` of its bytes: the data set is an ordinary map-style data set of known
length, so mmengine's samplers, epochs, ``auto_scale_lr`` and exact resume work unchanged.
"""
import json
import os
import os.path as osp
import tarfile
from typing import List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset

from mae_mm.registry import DATASETS
from .image_folder import IMG_EXTENSIONS, RefetchNamingFailures, _normalize_extensions

INDEX_KIND = 'wids-shard-index-v1'
INDEX_NAME = 'index.json'
WRITER = 'python tools/dataset_converters/images_to_shards.py SRC DST'


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

    Local paths only: the members are read with ``os.pread`` at the offsets of the index
    (mmengine's file backends have no general byte-range ``get``).

    The arguments ``data_prefix`` and ``with_label`` are those of ``ImageFolder``, so a recipe
    switches from a folder to shards by changing ``type`` and ``data_root`` alone.

    Args:
        data_root (str): Folder of the shards and their index.
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
                 max_refetch: int = 1000) -> None:
        self.extensions = _normalize_extensions(extensions)
        self._field = 'val_dataloader.dataset' if test_mode else 'train_dataloader.dataset'
        if with_label:
            raise ValueError(f'{self._field}.with_label=True: WebDatasetShards reads unlabelled '
                             f'images (pre-training); set with_label=False, or use ImageFolder '
                             f'for labels')
        if isinstance(data_prefix, dict):
            data_prefix = data_prefix.get('img_path', data_prefix.get('img', ''))
        folder = osp.join(data_root or '', data_prefix or '')
        index = osp.abspath(ann_file if osp.isabs(ann_file) else osp.join(folder, ann_file))
        if not osp.isfile(index):
            raise FileNotFoundError(
                f'shard index {index!r} does not exist: set {self._field}.data_root to the '
                f'folder written by {WRITER} (and ann_file to its index, {INDEX_NAME!r}), or '
                f'write the shards with that command')
        self._shards: List[str] = []
        super().__init__(ann_file=index, metainfo=metainfo, data_root=data_root,
                         pipeline=list(pipeline), test_mode=test_mode, indices=indices,
                         serialize_data=serialize_data, lazy_init=lazy_init,
                         max_refetch=max_refetch)

    def load_data_list(self) -> List[dict]:
        """Read the index into ``[dict(shard, offset, nbytes, member)]``; check the shards."""
        try:
            with open(self.ann_file, encoding='utf-8') as f:
                index = json.load(f)
            shardlist = index['shardlist']
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f'shard index {self.ann_file!r} is not a {INDEX_KIND} index ({type(err).__name__}'
                f'): rewrite it with {WRITER}') from None
        root = osp.dirname(self.ann_file)
        data_list, self._shards = [], []
        for shard_id, shard in enumerate(shardlist):
            path = osp.normpath(osp.join(root, shard['url']))
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'shard {path!r} listed in {self.ann_file!r} does not exist: copy it back, '
                    f'or re-run {WRITER} (it resumes) to rewrite the shards and index')
            if 'members' not in shard:
                raise ValueError(
                    f'shard index {self.ann_file!r} has no member offsets for {path!r} (a '
                    f'plain wids index): re-index the shards with '
                    f'mae_mm.datasets.webdataset_shards.index_shards or {WRITER}')
            size = shard.get('filesize')
            if size is not None and osp.getsize(path) != size:
                raise ValueError(
                    f'shard {path!r} is {osp.getsize(path)} bytes but {self.ann_file!r} '
                    f'records {size}: the index is stale; re-index the shards with {WRITER}')
            self._shards.append(path)
            for name, offset, nbytes in shard['members']:
                if name.lower().endswith(self.extensions):
                    data_list.append(dict(shard=shard_id, offset=offset, nbytes=nbytes,
                                          member=name))
        if not data_list:
            raise FileNotFoundError(
                f'shard index {self.ann_file!r} lists no members with extensions '
                f'{self.extensions}: write the shards with {WRITER}, or extend '
                f'{self._field}.extensions')
        return data_list

    @property
    def shard_paths(self) -> List[str]:
        """The shard files, in index order."""
        return list(self._shards)

    def get_data_info(self, idx: int) -> dict:
        """The data info of sample ``idx``, with ``img_path`` ``'shard.tar#member'``."""
        info = super().get_data_info(idx)
        info['img_path'] = f"{self._shards[info['shard']]}#{info['member']}"
        return info

    def read_bytes(self, info: dict) -> bytes:
        """The member's bytes (fewer than recorded when the shard file was cut short)."""
        fd = os.open(self._shards[info['shard']], os.O_RDONLY)
        try:
            return os.pread(fd, info['nbytes'], info['offset'])
        finally:
            os.close(fd)

    def prepare_data(self, idx: int):
        """Read the member's bytes, then run the pipeline on them."""
        info = self.get_data_info(idx)
        try:
            data = self.read_bytes(info)
        except OSError:  # shard gone since the index was read: LoadImageSafe reports the path
            data = None
        if data is not None:
            info['img_bytes'] = data
        return self.pipeline(info)

    def unreadable_sample_fix(self) -> str:
        return 'rewrite the shard without it'

    def unreadable_samples_hint(self) -> str:
        return (f'are the shards indexed by {self.ann_file!r} unreadable?): check them with '
                f'{WRITER} --verify')
