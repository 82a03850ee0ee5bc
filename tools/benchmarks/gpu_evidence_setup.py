"""What ``gpu_evidence_run.py`` trains and how it spends its budget: the settings per device, the
changes each run makes to its small-scale config, the iteration plan and the deadline hook.

Everything here is a function of the settings and of measured speeds; ``EvidenceRun`` (in
``gpu_evidence_run.py``) runs what it describes.
"""
import os
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from small_scale_plan import iters_for, pretrain_cost_factor
from small_scale_runs import DataSizes

MASK_RATIOS = (0.25, 0.5, 0.75, 0.9)
HEADLINE_RATIO = 0.75
# Shares of the compute time left after the calibration (fixed costs per run subtracted first).
SHARES = dict(pretrain=0.6, linear=0.12)  # the fine-tunings get the rest
SAFETY = 0.9  # plans use this fraction of the time they are given
WARMUP_ITERS = 5  # iterations of the calibration run not timed
DRY_ITERS = 3
VIT_S = dict(embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536)
NUM_PATCHES = 64  # 32 px Fashion-MNIST in 4x4 patches


@dataclass
class Settings:
    """What the runs train, per mode."""
    arch: Optional[dict]  # None: the small-scale configs' 4-block 64-wide ViT
    decoder_width: int
    decoder_heads: int
    decoder_depth: int
    pretrain_batch: int
    pretrain_lr: float
    finetune_batch: int
    finetune_lr: float
    linear_batch: int
    linear_lr: float
    val_batch: int
    workers: int
    threads: int
    sizes: DataSizes
    seeds: List[int]
    calibration_seconds: float
    bf16: bool
    # The probe's features: the frozen encoder's patch tokens after its final norm, averaged
    # ('avg_featmap'), then a BatchNorm without affine parameters and a linear layer.
    probe_features: str = 'avg_featmap'
    notes: List[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.arch['embed_dims'] if self.arch else 64

    @property
    def layers(self) -> int:
        return self.arch['num_layers'] if self.arch else 4


def settings_for(device: str, dry_run: bool) -> Settings:
    """The settings of a run on ``device``: tiny ones in a dry run.

    Args:
        device: 'cuda' or 'cpu'; bf16 autocast on CUDA only.
        dry_run: the study's 4-block 64-wide ViT on a few hundred images, one seed.
    """
    cuda = device == 'cuda'
    if dry_run:
        return Settings(arch=None, decoder_width=32, decoder_heads=2, decoder_depth=4,
                        pretrain_batch=64, pretrain_lr=1e-3, finetune_batch=64,
                        finetune_lr=1e-3, linear_batch=64, linear_lr=0.1, val_batch=200,
                        workers=0, threads=1,
                        sizes=DataSizes(pretrain=256, labels_all=256, labels_10pct=64,
                                        probe=256, test=200),
                        seeds=[0], calibration_seconds=0.0, bf16=cuda)
    return Settings(arch=dict(VIT_S), decoder_width=192, decoder_heads=6, decoder_depth=4,
                    # lr 1e-3 at batch 512 for pretraining (the paper's rule, 1.5e-4 x
                    # batch / 256, gives 3e-4: short schedules take a higher one, as the CPU
                    # study's 1e-3 at batch 128); fine-tuning 1e-3 at batch 256 with layer
                    # decay 0.75; probe SGD 0.1 with BatchNorm.
                    pretrain_batch=512, pretrain_lr=1e-3, finetune_batch=256,
                    finetune_lr=1e-3, linear_batch=256, linear_lr=0.1, val_batch=1000,
                    # data loader workers: all cores but three, 1 to 10
                    workers=max(1, min(10, (os.cpu_count() or 2) - 3)),
                    threads=4 if cuda else 1,
                    sizes=DataSizes(pretrain=None, labels_all=None, labels_10pct=None,
                                    probe=10000, test=None),
                    seeds=[0, 1], calibration_seconds=6.0, bf16=cuda)


def settings_record(s: Settings, data_root: str) -> dict:
    """The ``settings`` entry of evidence.json: the model, precision and each run kind's recipe."""
    return dict(
        model=dict(arch=s.arch or 'small-scale 4-block ViT (64 wide, 4 heads)', img_size=32,
                   patch_size=4, decoder_width=s.decoder_width, decoder_depth=s.decoder_depth,
                   decoder_heads=s.decoder_heads, norm_pix=True),
        precision='bf16 autocast' if s.bf16 else 'fp32',
        pretrain=dict(batch_size=s.pretrain_batch, lr=s.pretrain_lr,
                      optimizer='AdamW (0.9, 0.95), wd 0.05, warm-up 10% + cosine',
                      augmentation='RandomResizedCrop(0.2-1) + flip'),
        finetune=dict(batch_size=s.finetune_batch, lr=s.finetune_lr,
                      labels='all' if s.sizes.labels_all is None else s.sizes.labels_all,
                      recipe='AdamW, layer decay 0.75, drop path 0.1, label smoothing 0.1, '
                      'average-pooled tokens + fc_norm'),
        linear_probe=dict(batch_size=s.linear_batch, lr=s.linear_lr, labels=s.sizes.probe,
                          features=s.probe_features,
                          recipe='frozen encoder, BatchNorm without affine + linear, SGD '
                          'momentum 0.9'),
        data=dict(root=data_root, sizes=s.sizes.__dict__,
                  test_split='full 10k' if s.sizes.test is None else s.sizes.test),
        workers=s.workers)


# --------------------------------------------------------------------------------- configs
def config_updater(s: Settings, kind: str, data_root: str, cuda: bool) -> Callable:
    """A function that sets the device-dependent parts of a run's small-scale config.

    Args:
        s: the run's settings.
        kind: 'pretrain', 'linear' or 'finetune'.
        data_root: the folder of the Fashion-MNIST IDX files.
        cuda: pinned memory and cuDNN benchmark on.

    Returns:
        ``apply(cfg)``, which updates ``cfg`` in place (``small_scale_runs.execute``'s
        ``configure``).
    """

    def apply(cfg) -> None:
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            if cfg.get(loader) is None:
                continue
            cfg[loader].dataset.data_root = data_root
            cfg[loader].num_workers = s.workers
            cfg[loader].persistent_workers = False
            cfg[loader].pin_memory = cuda
        for loader in ('val_dataloader', 'test_dataloader'):
            if cfg.get(loader) is not None:
                cfg[loader].batch_size = s.val_batch
        cfg.env_cfg.cudnn_benchmark = cuda
        if s.bf16:
            cfg.optim_wrapper.type = 'MixedPrecisionOptimWrapper'
            cfg.optim_wrapper.dtype = 'bfloat16'
        backbone = cfg.model.backbone
        if s.arch is not None:
            backbone.arch = dict(s.arch)
        if kind == 'pretrain':
            cfg.model.neck.update(decoder_embed_dim=s.decoder_width,
                                  decoder_num_heads=s.decoder_heads)
            cfg.train_dataloader.batch_size = s.pretrain_batch
            cfg.optim_wrapper.optimizer.lr = s.pretrain_lr
            return
        cfg.model.head.in_channels = s.width
        # Evaluated once, by small_scale_runs.execute after training: not also by the loop.
        cfg.train_cfg.val_begin = 10**9
        if kind == 'linear':
            backbone.update(out_type=s.probe_features, final_norm=True, frozen_stages=s.layers)
            cfg.model.neck.input_features = s.width
            cfg.train_dataloader.batch_size = s.linear_batch
            cfg.optim_wrapper.optimizer.lr = s.linear_lr
        else:  # finetune
            cfg.train_dataloader.batch_size = s.finetune_batch
            cfg.optim_wrapper.optimizer.lr = s.finetune_lr

    return apply


# ------------------------------------------------------------------------------------ plan
def cost_factor(s: Settings, mask_ratio: float) -> float:
    """Compute of a pretraining iteration at ``mask_ratio`` relative to one at mask 0.75."""
    return pretrain_cost_factor(mask_ratio, s.decoder_depth, HEADLINE_RATIO, s.decoder_depth,
                                num_patches=NUM_PATCHES, encoder_layers=s.layers,
                                encoder_width=s.width, decoder_width=s.decoder_width)


def per_image_ratio(s: Settings, kind: str) -> float:
    """Compute per image of a classification step relative to a pretraining step (mask
    0.75): the encoder on all 65 tokens, forward + backward (fine-tuning) or forward only
    (probe), against the encoder on 17 tokens and the decoder on 65, both ways."""
    tokens = NUM_PATCHES + 1  # with the class token
    visible = 1 + NUM_PATCHES - int(NUM_PATCHES * HEADLINE_RATIO)
    encoder_all = s.layers * tokens * s.width**2
    pretrain = 3 * (s.layers * visible * s.width**2 + s.decoder_depth * tokens * s.decoder_width**2)
    return (3 if kind == 'finetune' else 1) * encoder_all / pretrain


def plan_iterations(s: Settings, calibration: dict, seconds_left: float) -> dict:
    """Iterations of the pretrainings (all alike) and of the probes (all alike).

    Args:
        s: the run's settings.
        calibration: ``pretrain_seconds_per_iter`` and ``overhead_seconds_per_run``, measured.
        seconds_left: the time the runs may take.

    Returns:
        ``pretrain_iters``, ``linear_iters`` and the ``estimates`` they rest on (seconds per
        probe and fine-tuning iteration, per evaluation, per run's fixed costs; the compute and
        fixed seconds of the plan).
    """
    per_iter = calibration['pretrain_seconds_per_iter']
    overhead = calibration['overhead_seconds_per_run']
    linear_iter = per_iter * max(0.35, per_image_ratio(s, 'linear') * s.linear_batch /
                                 s.pretrain_batch)
    finetune_iter = per_iter * per_image_ratio(s, 'finetune') * s.finetune_batch / \
        s.pretrain_batch
    test_images = 10000 if s.sizes.test is None else s.sizes.test
    # Evaluation: the forward passes, and the test images through the pipeline, costed at
    # most a pretraining image's share of a measured iteration (data loading included).
    eval_seconds = (overhead / 2 + test_images / s.val_batch * linear_iter +
                    test_images * per_iter / s.pretrain_batch)
    n_pre = len(s.seeds) * len(MASK_RATIOS)
    n_eval = n_pre + len(s.seeds)
    fixed = (n_pre + n_eval) * overhead + n_eval * eval_seconds
    compute = max(0.0, seconds_left - fixed) * SAFETY
    factors = sum(cost_factor(s, r) for r in MASK_RATIOS) * len(s.seeds)
    pretrain_iters = iters_for(SHARES['pretrain'] * compute, per_iter * factors)
    linear_iters = iters_for(SHARES['linear'] * compute, linear_iter * n_pre)
    # At most 50 epochs of pretraining: a guard against a mismeasured speed.
    pretrain_images = 60000 if s.sizes.pretrain is None else s.sizes.pretrain
    pretrain_iters = min(pretrain_iters, 50 * pretrain_images // s.pretrain_batch)
    return dict(pretrain_iters=pretrain_iters, linear_iters=linear_iters,
                estimates=dict(linear_seconds_per_iter=linear_iter,
                               finetune_seconds_per_iter=finetune_iter,
                               eval_seconds=eval_seconds, overhead_seconds=overhead,
                               compute_seconds=compute, fixed_seconds=fixed))


# ------------------------------------------------------------------------------------ hook
def stop_hook(deadline: float, min_iters: int = 1, record_times: bool = False):
    """A Runner hook that ends training after the iteration during which ``deadline`` (epoch
    seconds) passed, and optionally records when every iteration ended.

    Args:
        deadline: epoch seconds.
        min_iters: iterations run whatever the deadline.
        record_times: keep ``time.perf_counter()`` at the end of every iteration in ``times``.

    Returns:
        The hook; its ``stopped_at`` is the iteration it stopped after (None: not stopped).
    """
    from mmengine.hooks import Hook

    class StopAtDeadline(Hook):
        priority = 'VERY_HIGH'  # before the CheckpointHook, which then saves the last iter

        def __init__(self):
            self.stopped_at = None
            self.times = [] if record_times else None

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if self.times is not None:
                self.times.append(time.perf_counter())
            done = runner.iter + 1
            loop = runner.train_loop
            if time.time() >= deadline and done >= min_iters and done < loop.max_iters:
                loop._max_iters = done  # the loop ends; is_last_train_iter holds for this iter
                self.stopped_at = done

    return StopAtDeadline()
