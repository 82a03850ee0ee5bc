"""Data-pipeline mode of ``benchmark.py``: images/s of one worker (a single process), for
mmpretrain's MAE pretraining pipeline (``backend='pillow'``, its recipe; and ``'cv2'``) and
mae-mm's (``FastRandomResizedCrop``, as configured in ``configs/_base_/datasets/imagenet_mae.py``)
reading the same images from each source: the folder, the folder with each decode option
(``region_decode=False``: full decode, then crop; ``draft=True``; ``backend='cv2'``), WebDataset
shards (``WebDatasetShards``) and an LMDB database (mmengine's LMDB backend).

Each pipeline decodes, crops (RandomResizedCrop 224, area 0.2-1, bicubic, Pillow), flips and
packs, then the batch-side normalisation (BGR->RGB, mean/std) is applied to every image, so all
of "decode + RandomResizedCrop + flip + normalize" is timed. Pipelines run alternately over the
same files, several rounds, and the median rate of each is reported.
"""
import glob
import os
import os.path as osp
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DATASET_CONFIG = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'imagenet_mae.py')
CROP = dict(scale=224, crop_ratio_range=(0.2, 1.0), interpolation='bicubic')
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
REFERENCE = 'mmpretrain folder'  # the ratios are to this reader's rate


def write_jpeg_folder(root: str, num_images: int, size=(500, 375), quality: int = 90) -> str:
    """``num_images`` ordinary photo JPEGs (``size`` w x h, ``quality``) cut from
    scikit-image's photographs, rescaled at random so that they differ."""
    from PIL import Image
    from skimage import data as skdata
    os.makedirs(root, exist_ok=True)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(),
              skdata.immunohistochemistry()]
    rng = np.random.default_rng(0)
    width, height = size
    for i in range(num_images):
        photo = Image.fromarray(photos[i % len(photos)])
        zoom = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 1.5)
        photo = photo.resize((int(photo.width * zoom) + 1, int(photo.height * zoom) + 1),
                             Image.BICUBIC)
        left = int(rng.integers(0, photo.width - width + 1))
        top = int(rng.integers(0, photo.height - height + 1))
        photo.crop((left, top, left + width, top + height)).save(
            osp.join(root, f'photo_{i:04d}.jpg'), quality=quality)
    return root


def _mae_mm_pipeline(**first_transform) -> Compose:
    """mae-mm's pretraining pipeline (its config's), the first transform's settings updated."""
    steps = Config.fromfile(DATASET_CONFIG).train_pipeline
    steps[0].update(first_transform)
    with DefaultScope.overwrite_default_scope('mae_mm'):
        return Compose(steps)


def write_shards(files: List[str], root: str) -> str:
    """The files as members of one WebDataset shard in ``root``, indexed; returns ``root``."""
    import tarfile
    from mae_mm.datasets.webdataset_shards import INDEX_NAME, index_shards
    os.makedirs(root, exist_ok=True)
    shard = osp.join(root, 'shard-000000.tar')
    with tarfile.open(shard, 'w') as tar:
        for i, path in enumerate(files):
            tar.add(path, arcname=f'{i:06d}.jpg')
    index_shards([shard], osp.join(root, INDEX_NAME))
    return root


def write_lmdb(files: List[str], root: str) -> List[str]:
    """The files' bytes in an LMDB database at ``root``; returns the keys in file order."""
    import lmdb
    keys = [f'{i:06d}.jpg' for i in range(len(files))]
    size = sum(osp.getsize(f) for f in files)
    env = lmdb.open(root, map_size=max(size * 2, 1 << 24))
    with env.begin(write=True) as txn:
        for key, path in zip(keys, files):
            with open(path, 'rb') as f:
                txn.put(key.encode('ascii'), f.read())
    env.close()
    return keys


def mmpretrain_pipeline(backend: str = 'pillow', flip_and_pack: bool = True) -> Compose:
    """mmpretrain's MAE pretraining pipeline (its recipe: ``backend='pillow'``)."""
    import mmpretrain.datasets  # noqa: F401  (registers mmpretrain's transforms)
    steps = [dict(type='LoadImageFromFile'),
             dict(type='RandomResizedCrop', backend=backend, **CROP)]
    if flip_and_pack:
        steps += [dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return Compose(steps)


#: mae-mm's decode options compared on the folder: FastRandomResizedCrop settings.
FOLDER_VARIANTS = {
    'mae_mm folder': {},
    'mae_mm folder, region decode off': dict(region_decode=False),
    'mae_mm folder, draft': dict(draft=True),
    'mae_mm folder, cv2': dict(backend='cv2'),
}


def build_readers(files: List[str], work_dir: str) -> Dict[str, Callable[[int], dict]]:
    """What a data-loader worker does for sample ``i`` (read + decode + crop + flip + pack),
    for mmpretrain's pipeline on the folder and mae-mm's on each source of the same images."""
    from mae_mm.datasets import WebDatasetShards  # (registers mae-mm's transforms)

    def on_files(pipeline):
        return lambda i: pipeline(dict(img_path=files[i], sample_idx=i))

    readers = {REFERENCE: on_files(mmpretrain_pipeline('pillow')),
               'mmpretrain folder, cv2': on_files(mmpretrain_pipeline('cv2'))}
    for name, settings in FOLDER_VARIANTS.items():
        readers[name] = on_files(_mae_mm_pipeline(**settings))
    with DefaultScope.overwrite_default_scope('mae_mm'):
        shards = WebDatasetShards(
            data_root=write_shards(files, osp.join(work_dir, 'shards')),
            pipeline=Config.fromfile(DATASET_CONFIG).train_pipeline)
    readers['mae_mm shards'] = shards.prepare_data
    try:
        db = osp.join(work_dir, 'lmdb')
        keys = write_lmdb(files, db)
    except ImportError:  # lmdb is an optional requirement
        return readers
    from_lmdb = _mae_mm_pipeline(backend_args=dict(backend='lmdb', db_path=db))
    readers['mae_mm lmdb'] = lambda i: from_lmdb(dict(img_path=keys[i], sample_idx=i))
    return readers


def normalize(packed: dict) -> torch.Tensor:
    """What SelfSupDataPreprocessor does per image: BGR->RGB, float, mean/std."""
    return (packed['inputs'].flip(0).float() - MEAN) / STD


def time_reader(reader: Callable[[int], dict], num_images: int) -> Tuple[float, float]:
    """Images per second of ``reader`` + normalisation over samples ``0 .. num_images - 1``:
    per wall-clock second and per CPU second of this process (the rate of a worker that has a
    core to itself, which other jobs on a shared machine do not disturb)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(num_images):
        normalize(reader(i))
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return num_images / wall, num_images / cpu


def list_jpegs(data_dir: str, count: int) -> List[str]:
    """``count`` JPEG paths from ``data_dir`` (a folder, searched recursively for .jpg, .jpeg
    and ImageNet's .JPEG, or a glob pattern), sorted and cycled through as often as needed."""
    if glob.has_magic(data_dir):
        files = sorted(glob.glob(data_dir, recursive=True))
    else:
        files = sorted(glob.glob(osp.join(data_dir, '**', '*.jp*g'), recursive=True) +
                       glob.glob(osp.join(data_dir, '**', '*.JPEG'), recursive=True))
    if not files:
        raise SystemExit(f'--data-dir {data_dir} holds no .jpg/.jpeg/.JPEG file')
    return (files * (count // len(files) + 1))[:count]


def benchmark_pipelines(data_dir: Optional[str], num_images: int, rounds: int = 5,
                        smoke: bool = False, jpeg_size=(500, 375)) -> dict:
    """Median images/s of each pipeline over ``rounds`` alternating passes."""
    torch.set_num_threads(1)  # one dataloader worker's share of the machine
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix='mae_mm_pipeline_')
        data_dir = write_jpeg_folder(tmp.name, min(num_images, 100), size=jpeg_size)
    files = list_jpegs(data_dir, num_images)
    rounds = 1 if smoke else rounds
    with tempfile.TemporaryDirectory(prefix='mae_mm_sources_') as work_dir:
        readers = build_readers(files, work_dir)
        for reader in readers.values():  # warm-up: imports, caches
            time_reader(reader, 5)
        wall = {name: [] for name in readers}
        cpu = {name: [] for name in readers}
        for r in range(rounds):
            names = list(readers) if r % 2 == 0 else list(readers)[::-1]
            for name in names:
                rate, cpu_rate = time_reader(readers[name], len(files))
                wall[name].append(rate)
                cpu[name].append(cpu_rate)
    if tmp is not None:
        tmp.cleanup()
    medians = {name: statistics.median(values) for name, values in wall.items()}
    cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
    generated = f'generated {jpeg_size[0]}x{jpeg_size[1]} q90'
    return dict(mode='pipeline', data_dir=data_dir if tmp is None else generated,
                num_images=len(files), rounds=rounds, img_per_s=medians,
                img_per_cpu_s=cpu_medians, all_rates=wall, all_cpu_rates=cpu,
                speedup={name: medians[name] / medians[REFERENCE] for name in medians},
                speedup_cpu={name: cpu_medians[name] / cpu_medians[REFERENCE]
                             for name in cpu_medians})


def print_pipelines(result: dict) -> None:
    print(f"data pipeline, one process, {result['num_images']} images of "
          f"{result['data_dir']}, median of {result['rounds']} alternating rounds")
    print(f"{'':34s}{'img/s':>9s}{'ratio':>7s}{'img/CPU-s':>11s}{'ratio':>7s}")
    for name, rate in result['img_per_s'].items():
        print(f"{name:34s}{rate:9.1f}{result['speedup'][name]:6.2f}x"
              f"{result['img_per_cpu_s'][name]:11.1f}{result['speedup_cpu'][name]:6.2f}x")
