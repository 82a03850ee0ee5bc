"""A folder of images, with or without one subfolder per class (ImageNet layout)."""
import os
import os.path as osp
from typing import List, Optional, Sequence, Union
from urllib.parse import quote

import mmengine.fileio as fileio
import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import MMLogger

from mae_mm.registry import DATASETS

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def _normalize_extensions(extensions: Union[str, Sequence[str]]) -> tuple:
    """``'JPG'``, ``'.jpg'`` and ``['jpg', 'png']`` -> lower-case suffixes with a dot."""
    if isinstance(extensions, str):
        extensions = [extensions]
    exts = tuple(sorted({('' if e.startswith('.') else '.') + e.lower() for e in extensions}))
    if not exts or '.' in exts:
        raise ValueError(f'extensions={extensions!r} is empty: give image suffixes such as '
                         f"('.jpg', '.png')")
    return exts


def _is_uri(path: str) -> bool:
    """``http://``, ``s3://``, ... (mmengine's rule for a backend prefix)."""
    return '://' in path


def scan_images(folder: str, extensions: Sequence[str]) -> List[str]:
    """All image files under ``folder``, recursively, as sorted paths relative to ``folder``.

    Hidden files and folders (name starting with ``.``) are skipped; symlinks are followed.

    Args:
        folder (str): The folder to scan.
        extensions (Sequence[str]): Lower-case suffixes with a dot, matched case-insensitively.

    Returns:
        list[str]: Relative paths, sorted, using ``/`` as separator.
    """
    found, extensions = [], tuple(extensions)
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith('.')]
        rel_root = osp.relpath(root, folder)
        for name in files:
            if not name.startswith('.') and name.lower().endswith(extensions):
                found.append(name if rel_root == '.' else f'{rel_root}/{name}'.replace(os.sep, '/'))
    return sorted(found)


class RefetchNamingFailures:
    """:meth:`BaseDataset.__getitem__` with errors that name the failing sample and the fix.

    For a ``BaseDataset`` subclass with ``_field`` (its config field) and the two methods
    ``unreadable_sample_fix`` and ``unreadable_samples_hint``.
    """

    def __getitem__(self, idx: int) -> dict:
        if not self._fully_initialized:
            self.full_init()
        if self.test_mode:
            data = self.prepare_data(idx)
            if data is None:
                raise RuntimeError(
                    f'the test pipeline returned None for {self.get_data_info(idx)["img_path"]!r} '
                    f'(unreadable image?): evaluation cannot skip samples; '
                    f'{self.unreadable_sample_fix()}')
            return data
        first = idx
        for _ in range(self.max_refetch + 1):
            data = self.prepare_data(idx)
            if data is not None:
                return data
            idx = self._rand_another()
        raise RuntimeError(
            f'the pipeline returned None for sample {first} and {self.max_refetch} random others '
            f'({self.unreadable_samples_hint()}, or raise {self._field}.max_refetch')


@DATASETS.register_module()
class ImageFolder(RefetchNamingFailures, BaseDataset):
    """Images in a folder, for MAE pre-training (no labels) or classification (labels).

    Layouts:

    - ``with_label=False``: every image under ``data_root/data_prefix``, recursively.
    - ``with_label=True``: ImageNet layout, ``data_root/data_prefix/<class>/**/<image>``. Class
      names are the sorted subfolder names (or ``metainfo['classes']``, in that order) and label
      ids their positions; ``metainfo['classes']`` holds them.
    - ``ann_file`` (optional): one ``relative/path.jpg [label]`` per line, paths relative to
      ``data_root/data_prefix`` (ImageNet's ``meta/train.txt``); replaces the folder scan.
    - Key-value and remote sources (``ann_file`` required, nothing to scan): with
      ``data_root=''`` (and ``data_prefix=''``) each ``img_path`` is the listed path itself,
      the key of an LMDB read with ``backend_args=dict(backend='lmdb', db_path=...)`` in the
      loading transform; with a URL ``data_root`` (``http://``, ``s3://``, ...) it is
      ``data_root/<listed path>`` (URL-quoted for http), and ``ann_file`` may be a URL too.

    Each data info holds ``img_path`` and, when labelled, ``gt_label`` (int). Configuration
    mistakes (missing folder, no images, no class folders) raise a one-line error naming the
    config field before anything expensive happens.

    Args:
        data_root (str): Root folder of the data set.
        data_prefix (str | dict): Subfolder of ``data_root`` holding the images, e.g.
            ``'train'``; ``''`` means ``data_root`` itself. ``dict(img_path='train')`` is also
            accepted. Defaults to ''.
        with_label (bool): Read class labels from the subfolder names. Defaults to False.
        ann_file (str): Optional list file, relative to ``data_root``. Defaults to ''.
        extensions (Sequence[str]): Image suffixes, case-insensitive. Defaults to
            ``IMG_EXTENSIONS`` (jpg, jpeg, png, bmp, webp, tif, tiff).
        metainfo (dict, optional): Meta information; ``classes`` fixes the class order.
        pipeline (Sequence[dict | Callable]): Data transforms. Defaults to ().
        test_mode (bool): Evaluation data set (no refetch of failed samples). Defaults to False.
        indices (int | Sequence[int], optional): Keep only these samples (see BaseDataset).
        serialize_data (bool): Store the data list as one numpy buffer. Defaults to True.
        lazy_init (bool): Defer scanning to ``full_init``. Defaults to False.
        max_refetch (int): Maximum number of other samples tried when the pipeline returns
            None (e.g. a corrupt image skipped by ``LoadImageSafe``). Defaults to 1000.
    """

    def __init__(self,
                 data_root: str,
                 data_prefix: Union[str, dict] = '',
                 with_label: bool = False,
                 ann_file: str = '',
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 metainfo: Optional[dict] = None,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 lazy_init: bool = False,
                 max_refetch: int = 1000) -> None:
        if isinstance(data_prefix, dict):
            data_prefix = data_prefix.get('img_path', data_prefix.get('img', ''))
        self.with_label = with_label
        self.extensions = _normalize_extensions(extensions)
        self._field = 'val_dataloader.dataset' if test_mode else 'train_dataloader.dataset'
        if data_root and _is_uri(data_root):  # mmengine cannot join paths to an http:// root
            data_prefix = data_root.rstrip('/') + ('/' + data_prefix if data_prefix else '')
            if ann_file and not (_is_uri(ann_file) or osp.isabs(ann_file)):
                ann_file = data_root.rstrip('/') + '/' + ann_file
            data_root = ''
        # Cheap checks first, so that a wrong path fails at once even with lazy_init=True.
        img_dir = data_prefix if osp.isabs(data_prefix) else osp.join(data_root or '', data_prefix)
        keys_only = img_dir == '' or _is_uri(img_dir)  # LMDB keys or URLs: nothing to scan
        if keys_only and not ann_file:
            raise FileNotFoundError(
                f'data root {img_dir!r} is not a local folder and no ann_file lists the images: '
                f'set {self._field}.ann_file to a file of relative paths (images_to_lmdb.py '
                f'writes one), or data_root to a folder of images')
        if not keys_only and not osp.isdir(img_dir):
            what = 'is not a folder' if osp.exists(img_dir) else 'does not exist'
            raise FileNotFoundError(
                f'data root {img_dir!r} {what}: set {self._field}.data_root (and '
                f'data_prefix) to a folder of images')
        if ann_file and not _is_uri(ann_file):
            path = ann_file if osp.isabs(ann_file) else osp.join(data_root or '', ann_file)
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'annotation file {path!r} does not exist: fix {self._field}.ann_file '
                    f"(relative to data_root) or set ann_file='' to scan the folder")
        super().__init__(ann_file=ann_file, metainfo=metainfo, data_root=data_root,
                         data_prefix=dict(img_path=data_prefix), indices=indices,
                         serialize_data=serialize_data, pipeline=list(pipeline),
                         test_mode=test_mode, lazy_init=lazy_init, max_refetch=max_refetch)

    @property
    def img_prefix(self) -> str:
        """The folder holding the images: ``data_root/data_prefix`` ('' for LMDB keys; a URL)."""
        prefix = self.data_prefix['img_path']
        if not prefix or _is_uri(prefix):
            return prefix.rstrip('/')
        return osp.normpath(prefix)

    def _listed_path(self, path: str) -> str:
        """``img_path`` of a path listed in ``ann_file``."""
        prefix = self.img_prefix
        if not prefix:
            return path
        if _is_uri(prefix):
            return f'{prefix}/{quote(path) if prefix.startswith("http") else path}'
        return osp.join(prefix, path)

    def load_data_list(self) -> List[dict]:
        """Scan the folder (or read ``ann_file``) into ``[dict(img_path, [gt_label])]``."""
        if self.ann_file:
            return self._load_ann_file()
        if not self.with_label:
            files = scan_images(self.img_prefix, self.extensions)
            self._check_found(files, self.img_prefix)
            return [dict(img_path=osp.join(self.img_prefix, f)) for f in files]

        classes = self._class_names()
        data_list, empty = [], []
        for label, name in enumerate(classes):
            files = scan_images(osp.join(self.img_prefix, name), self.extensions)
            empty += [] if files else [name]
            data_list += [dict(img_path=osp.join(self.img_prefix, name, f), gt_label=label)
                          for f in files]
        self._check_found(data_list, self.img_prefix)
        if empty:
            MMLogger.get_current_instance().warning(
                f'{len(empty)} class folder(s) under {self.img_prefix!r} hold no images '
                f'(their label ids are kept): {empty[:10]}')
        return data_list

    def _class_names(self) -> List[str]:
        """The class folders, in label order; also stored in ``metainfo['classes']``."""
        folders = sorted(d.name for d in os.scandir(self.img_prefix)
                         if d.is_dir() and not d.name.startswith('.'))
        if not folders:
            raise FileNotFoundError(
                f'with_label=True needs one subfolder per class under {self.img_prefix!r} '
                f'(ImageNet layout), but it has no subfolders: move the images into class '
                f'folders, or set {self._field}.with_label=False for unlabelled images')
        classes = self._metainfo.get('classes')
        if classes is None:
            classes = folders
        else:
            missing = [c for c in classes if c not in folders]
            if missing:
                raise FileNotFoundError(
                    f'metainfo classes {missing[:5]} have no folder under {self.img_prefix!r}: '
                    f'fix {self._field}.metainfo.classes or the folder names')
        self._metainfo['classes'] = tuple(classes)
        return list(classes)

    def _load_ann_file(self) -> List[dict]:
        """Read ``relative/path [label]`` lines; blank lines and ``#`` comments are ignored."""
        data_list = []
        try:
            lines = fileio.get_text(self.ann_file, encoding='utf-8').splitlines()
        except Exception as err:  # backends raise various types (URLError, HTTPError, ...)
            raise FileNotFoundError(
                f'cannot read annotation file {self.ann_file!r}: {type(err).__name__}: '
                f'{str(err).splitlines()[0] if str(err) else ""}: fix {self._field}.ann_file'
            ) from None
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            path, _, label = line.rpartition(' ') if self.with_label else (line, '', '')
            if self.with_label and not label.lstrip('-').isdigit():
                raise ValueError(
                    f'{self.ann_file}:{lineno}: expected "relative/path label" with an '
                    f'integer label, got {line!r}: fix the file or set '
                    f'{self._field}.with_label=False')
            info = dict(img_path=self._listed_path(path.strip()))
            if self.with_label:
                info['gt_label'] = int(label)
            data_list.append(info)
        if not data_list:
            raise ValueError(f'annotation file {self.ann_file!r} lists no images: fill it or '
                             f"set {self._field}.ann_file='' to scan the folder")
        return data_list

    def _check_found(self, data_list: list, folder: str) -> None:
        if not data_list:
            raise FileNotFoundError(
                f'no images with extensions {self.extensions} found under {folder!r}: set '
                f'{self._field}.data_root/data_prefix to a folder of images, or extend '
                f'{self._field}.extensions')

    def get_cat_ids(self, idx: int) -> List[int]:
        """The label of sample ``idx`` as a one-element list (for class-balanced wrappers)."""
        return [int(self.get_data_info(idx)['gt_label'])]

    def get_gt_labels(self) -> np.ndarray:
        """The labels of all samples, as an int64 array."""
        return np.array([self.get_data_info(i)['gt_label'] for i in range(len(self))],
                        dtype=np.int64)

    def unreadable_sample_fix(self) -> str:
        """What to do about a sample the test pipeline cannot read."""
        return 'replace or remove the file'

    def unreadable_samples_hint(self) -> str:
        """Where unreadable samples come from and what to check, for the refetch error."""
        return (f'are the images under {self.img_prefix!r} unreadable?): check the files and '
                'the pipeline')
