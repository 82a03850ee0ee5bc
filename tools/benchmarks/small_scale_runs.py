"""The runs of the small-scale study, each one an mmengine Runner on a config of
``configs/small_scale/``: MAE pretraining, fine-tuning, training from scratch, linear probing.
Plus the raw-pixel logistic-regression baseline and the reconstruction figure."""
import functools
import os
import os.path as osp
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'small_scale')
CONFIGS = dict(
    pretrain='mae_vit-mini-p4_fmnist-32px.py',
    finetune='vit-mini-p4_fmnist-32px_finetune.py',
    scratch='vit-mini-p4_fmnist-32px_scratch.py',
    linear='vit-mini-p4_fmnist-32px_linear.py',
    random_linear='vit-mini-p4_fmnist-32px_linear.py',
)
FMNIST_ROOT = '/usr/share/datasets/fashion-mnist'


@dataclass
class DataSizes:
    """How much of Fashion-MNIST the runs use (the smoke mode shrinks everything).

    Attributes:
        pretrain (int | None): Unlabelled pretraining images (None: all 60k).
        labels_all (int | None): 'All labels' fine-tuning set (None: all 60k).
        labels_10pct (int | None): '10% labels' set (None: a 10% stratified draw, 6k).
        probe (int): Labelled images of the linear probe and the logistic regression.
        test (int | None): Test images, a stratified draw fixed for all runs (None: the full
            10k test split). 5k halves the ~25 evaluations' cost on a shared 2-core machine;
            its standard error at 85% is 0.5 points, and runs are compared on the same images.
    """
    pretrain: Optional[int] = None
    labels_all: Optional[int] = None
    labels_10pct: Optional[int] = None
    probe: int = 10000
    test: Optional[int] = 5000

    def train_subset(self, labels: str) -> dict:
        """FashionMNIST subset arguments of a fine-tuning set ('all' or '10pct')."""
        if labels == 'all':
            return dict(subset_ratio=None, num_samples=self.labels_all)
        if self.labels_10pct is None:
            return dict(subset_ratio=0.1, num_samples=None)
        return dict(subset_ratio=None, num_samples=self.labels_10pct)


@dataclass
class RunResult:
    """What one run measured; serialised to the study's JSON."""
    name: str
    kind: str
    iters: int
    batch_size: int
    train_seconds: float
    seed: int = 0
    labels: str = ''
    variant: str = ''
    top1: Optional[float] = None
    eval_seconds: float = 0.0
    loss_first: Optional[float] = None
    loss_last: Optional[float] = None
    checkpoint: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def formatted_once(cfg):
    """``cfg`` as a Config whose ``pretty_text`` is formatted (by yapf) once: the Runner asks
    for it five times per run, ~0.3 s each, which adds up over the study's ~30 runs."""
    from mmengine.config import Config

    class OnceFormattedConfig(Config):

        @property
        def pretty_text(self) -> str:
            if '_pretty_text_cache' not in self.__dict__:
                object.__setattr__(self, '_pretty_text_cache', Config.pretty_text.fget(self))
            return self.__dict__['_pretty_text_cache']

    return OnceFormattedConfig(cfg.to_dict(), filename=cfg.filename)


def cache_fashion_mnist_reads() -> None:
    """Read each IDX file once per process: the study builds ~60 data sets from the same files
    (the files do not change during a run, so the cached arrays are exact)."""
    from mae_mm.datasets import array_dataset
    if not hasattr(array_dataset.read_idx_gz, 'cache_info'):
        array_dataset.read_idx_gz = functools.lru_cache(maxsize=8)(array_dataset.read_idx_gz)


def schedule(iters: int, warmup_fraction: float = 0.1) -> List[dict]:
    """Linear warm-up then cosine decay over ``iters`` iterations."""
    warmup = max(1, int(round(iters * warmup_fraction)))
    warmup = min(warmup, iters - 1) if iters > 1 else 1
    return [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
        dict(type='CosineAnnealingLR', T_max=max(1, iters - warmup), eta_min=1e-6,
             by_epoch=False, begin=warmup, end=max(iters, warmup + 1)),
    ]


def build_config(kind: str, name: str, work_root: str, iters: int, seed: int, sizes: DataSizes,
                 checkpoint: Optional[str] = None, labels: str = 'all',
                 pretrain_options: Optional[dict] = None):
    """The config of one run: the study's config of ``kind`` with the schedule, data subset,
    seed and (for fine-tuning and probing) the pretrained checkpoint filled in."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIG_DIR, CONFIGS[kind]))
    cfg.work_dir = osp.join(work_root, name)
    cfg.experiment_name = name
    cfg.randomness = dict(seed=seed, deterministic=False)
    # The study prints one line per run; the Runner's own INFO log stays in its work dir.
    cfg.log_level = 'WARNING'
    cfg.train_cfg.max_iters = iters
    cfg.param_scheduler = schedule(iters)
    cfg.default_hooks.logger.interval = max(1, iters // 10)
    dataset = cfg.train_dataloader.dataset
    if kind == 'pretrain':
        dataset.num_samples = sizes.pretrain
        cfg.default_hooks.checkpoint.interval = iters
        cfg.merge_from_dict(pretrain_options or {})
        return cfg
    cfg.train_cfg.val_interval = iters + 1  # evaluated once, by the study, after training
    cfg.val_dataloader.dataset.num_samples = sizes.test
    if kind in ('linear', 'random_linear'):
        dataset.num_samples = sizes.probe
    else:
        dataset.update(sizes.train_subset(labels))
    if kind in ('finetune', 'linear'):
        if checkpoint is None:
            raise ValueError(f'run {name}: kind {kind!r} needs the pretrained checkpoint')
        cfg.model.backbone.init_cfg.checkpoint = checkpoint
    else:
        cfg.model.backbone.init_cfg = None
    return cfg


def _loss_history(runner) -> tuple:
    """Mean training loss of the first and the last tenth of the iterations."""
    scalars = runner.message_hub.log_scalars
    if 'train/loss' not in scalars:
        return None, None
    values = np.asarray(scalars['train/loss'].data[0], dtype=float)
    if values.size == 0:
        return None, None
    tenth = max(1, values.size // 10)
    return float(values[:tenth].mean()), float(values[-tenth:].mean())


def execute(kind: str, name: str, work_root: str, iters: int, seed: int, sizes: DataSizes,
            threads: int, keep_model: bool = False, configure: Optional[Callable] = None,
            hooks: Sequence = (), **config_args):
    """Build the Runner of one run, train it, evaluate it on the test split.

    Args:
        configure (callable, optional): Called with the run's config before the Runner is
            built, to change it in place (another device, model size, data root...).
        hooks (sequence): Hook instances registered on the Runner before training. One that
            ends training early (e.g. at a deadline) makes ``iters`` of the result the
            iterations actually run; the pretraining checkpoint is that of the last one.

    Returns:
        tuple: ``(RunResult, model or None)``; the model is returned when ``keep_model``.
    """
    import torch
    from mae_mm.engine import build_runner
    cfg = build_config(kind, name, work_root, iters, seed, sizes, **config_args)
    if configure is not None:
        configure(cfg)
    started = time.time()
    runner = build_runner(formatted_once(cfg))
    for hook in hooks:
        runner.register_hook(hook)
    torch.set_num_threads(threads)
    runner.train()
    train_seconds = time.time() - started
    first, last = _loss_history(runner)
    result = RunResult(name=name, kind=kind, iters=runner.iter, seed=seed,
                       batch_size=cfg.train_dataloader.batch_size, train_seconds=train_seconds,
                       labels=config_args.get('labels', ''), loss_first=first, loss_last=last)
    if kind == 'pretrain':
        result.checkpoint = osp.join(cfg.work_dir, f'iter_{runner.iter}.pth')
        if not osp.isfile(result.checkpoint):
            raise RuntimeError(f'pretraining {name} left no checkpoint {result.checkpoint}')
    else:
        started = time.time()
        metrics = runner.val()
        result.eval_seconds = time.time() - started
        result.top1 = float(metrics['accuracy/top1'])
    model = runner.model if keep_model else None
    del runner
    return result, model


def logistic_regression_baseline(sizes: DataSizes, max_iter: int = 200,
                                 data_root: str = FMNIST_ROOT) -> Dict[str, float]:
    """Raw-pixel logistic regression (sklearn, C=0.1) on the probe's labelled images.

    Returns:
        dict: ``top1`` on the study's test images, ``top1_full_test`` on all 10k, ``seconds``.
    """
    from sklearn.linear_model import LogisticRegression

    from mae_mm.datasets import FashionMNIST
    started = time.time()
    train = FashionMNIST(data_root=data_root, split='train', num_samples=sizes.probe, seed=0)
    full_test = FashionMNIST(data_root=data_root, split='test', seed=0)
    test = (full_test if sizes.test is None else
            FashionMNIST(data_root=data_root, split='test', num_samples=sizes.test, seed=0))

    def pixels(dataset):
        return dataset.images.reshape(len(dataset.images), -1).astype(np.float32) / 255.0
    classifier = LogisticRegression(C=0.1, max_iter=max_iter)
    classifier.fit(pixels(train), train.labels)
    return dict(
        top1=100.0 * float(classifier.score(pixels(test), test.labels)),
        top1_full_test=100.0 * float(classifier.score(pixels(full_test), full_test.labels)),
        seconds=time.time() - started)


def reconstruction_figure(model, out_path: str, image_dir: str, num_images: int = 8,
                          seed: int = 0) -> str:
    """Reconstruct Fashion-MNIST test images with the pretrained MAE and save the figure.

    The images (one per class where possible) are written as PNG files first, so they go
    through the same loading and resizing as any image file.
    """
    from PIL import Image

    from mae_mm.datasets import FashionMNIST
    from mae_mm.visualization import draw_reconstructions
    test = FashionMNIST(data_root=FMNIST_ROOT, split='test', seed=0)
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in range(num_images)]
    os.makedirs(image_dir, exist_ok=True)
    paths = []
    for index in picks:
        path = osp.join(image_dir, f'fmnist_test_{index:05d}.png')
        Image.fromarray(test.images[index]).convert('RGB').save(path)
        paths.append(path)
    mask_ratio = model.backbone.mask_ratio
    return draw_reconstructions(
        model, paths, out_path, seed=seed,
        title=f'MAE on Fashion-MNIST test images (mask ratio {mask_ratio})')
