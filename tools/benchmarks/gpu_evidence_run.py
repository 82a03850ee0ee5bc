"""GPU evidence run: MAE on Fashion-MNIST on one GPU, in a time budget (issue 18).

    python tools/benchmarks/gpu_evidence_run.py --device cuda --budget-minutes 4 --out DIR
    python tools/benchmarks/gpu_evidence_run.py --device cpu --dry-run --out DIR   # ~1 min, CI

A ViT-S-sized encoder (12 blocks, 384 wide, 6 heads, 4x4 patches on 32 px Fashion-MNIST, 64
patches; decoder 4 blocks, 192 wide) is MAE-pretrained at mask ratios 0.25 / 0.5 / 0.75 / 0.9
with 2 seeds (8 pretrainings, all with the same schedule), each pretraining is linear-probed
(frozen encoder, 10k labelled images, the same count as the raw-pixel logistic regression it
is compared with), and the mask-0.75 ones are fine-tuned with all 60k labels. Everything is
evaluated on the full 10k test split, next to sklearn's logistic regression on raw pixels
(83.6% there, computed again in this run). bf16 autocast (``MixedPrecisionOptimWrapper``) on
CUDA.

The runs are the small-scale study's (``small_scale_runs.py``: one mmengine Runner per run on
the configs of ``configs/small_scale/``), with the model, batch sizes, data loader workers,
precision and data root set for the device; iterations are planned from the budget and a
measured speed, as ``small_scale_plan.py`` plans them: a short real pretraining measures the
seconds per iteration (data loading included), the 8 pretrainings get the same iterations,
then the probes, then the fine-tunings get what is left. A deadline hook ends any run at the
budget's end (the run is then marked ``truncated``); runs that cannot start in time are listed
in ``skipped``. Results are written after every run, so a run stopped from outside leaves them.

Writes ``DIR/evidence.json`` and ``DIR/evidence.md``; checkpoints go to a temporary folder
(``--work-dir`` keeps them). ``--dry-run``: the same steps on tiny sizes (the study's 4-block
64-wide ViT, a few hundred images, 3 iterations per run, one seed), the same JSON keys.

Data: the four Fashion-MNIST IDX ``.gz`` files in ``--data-root`` (default
``.gpu_carry/data/fashion-mnist`` of the checkout when present, else
``/usr/share/datasets/fashion-mnist``, the Debian package ``dataset-fashion-mnist``).

JSON (accuracies are fractions in [0, 1]): ``status`` ('running' / 'complete' / 'partial' /
'failed'), ``error``, ``dry_run``, ``device``, ``environment``, ``settings``, ``seeds``,
``mask_ratios``, ``plan``, ``logistic_regression`` (``accuracy``, ``reference_accuracy``),
``runs`` (one entry per run), ``linear_probe_curve`` (per mask ratio: ``accuracies`` per seed,
``mean``), ``finetune`` (``accuracies`` per seed, ``mean``), ``summary`` (the means at mask 0.75
and whether each clears the logistic regression), ``skipped``, ``notes``, ``wall_seconds``.
"""
import time

STARTED = time.time()  # the budget counts from here, imports included

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import os.path as osp  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

TOOL_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(TOOL_DIR))
for path in (REPO_ROOT, TOOL_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

from small_scale_plan import MIN_ITERS, iters_for, pretrain_cost_factor  # noqa: E402
from small_scale_runs import DataSizes  # noqa: E402

MASK_RATIOS = (0.25, 0.5, 0.75, 0.9)
HEADLINE_RATIO = 0.75
REFERENCE_ACCURACY = 0.836  # raw-pixel logistic regression, 10k labels, full test split
DEFAULT_DATA_ROOTS = (osp.join(REPO_ROOT, '.gpu_carry', 'data', 'fashion-mnist'),
                      '/usr/share/datasets/fashion-mnist')
FMNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')

# Shares of the compute time left after the calibration (fixed costs per run subtracted first).
SHARES = dict(pretrain=0.6, linear=0.12)  # the fine-tunings get the rest
SAFETY = 0.9  # plans use this fraction of the time they are given
WARMUP_ITERS = 5  # iterations of the calibration run not timed
DRY_ITERS = 3


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


VIT_S = dict(embed_dims=384, num_layers=12, num_heads=6, feedforward_channels=1536)


def settings_for(device: str, dry_run: bool) -> Settings:
    cuda = device == 'cuda'
    workers = 0 if dry_run else max(1, min(10, (os.cpu_count() or 2) - 3))
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
                    workers=workers, threads=4 if cuda else 1,
                    sizes=DataSizes(pretrain=None, labels_all=None, labels_10pct=None,
                                    probe=10000, test=None),
                    seeds=[0, 1], calibration_seconds=6.0, bf16=cuda)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--budget-minutes', type=float, default=4.0,
                        help='wall-clock budget of the whole run, start-up included')
    parser.add_argument('--out', required=True, help='folder of evidence.json / evidence.md')
    parser.add_argument('--dry-run', action='store_true',
                        help='tiny sizes, one seed, 3 iterations per run: checks every step')
    parser.add_argument('--data-root', help='folder of the Fashion-MNIST IDX .gz files')
    parser.add_argument('--work-dir', help='checkpoints and Runner logs, kept (default: a '
                        'temporary folder, removed at the end)')
    args = parser.parse_args(argv)
    if args.budget_minutes <= 0:
        parser.error('--budget-minutes must be > 0')
    if args.data_root is None:
        args.data_root = next((root for root in DEFAULT_DATA_ROOTS if _has_fmnist(root)),
                              DEFAULT_DATA_ROOTS[-1])
    return args


def _has_fmnist(root: str) -> bool:
    return all(osp.isfile(osp.join(root, name)) for name in FMNIST_FILES)


# ---------------------------------------------------------------------------------- hooks
def _stop_hook(deadline: float, min_iters: int = 1, record_times: bool = False):
    """A Runner hook that ends training after the iteration during which ``deadline`` (epoch
    seconds) passed, and optionally records when every iteration ended."""
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


# ------------------------------------------------------------------------------- the run
class EvidenceRun:

    def __init__(self, args: argparse.Namespace, argv: List[str]):
        self.args = args
        self.settings = settings_for(args.device, args.dry_run)
        self.deadline = STARTED + args.budget_minutes * 60
        self.reserve = 6.0 + 0.03 * args.budget_minutes * 60  # report, clean-up, slack
        self.work_dir = args.work_dir or tempfile.mkdtemp(prefix='mae_mm_evidence_')
        s = self.settings
        self.record = dict(
            tool='tools/benchmarks/gpu_evidence_run.py',
            command='python tools/benchmarks/gpu_evidence_run.py ' + ' '.join(argv),
            status='running', error=None, dry_run=args.dry_run, device=args.device,
            budget_minutes=args.budget_minutes, wall_seconds=0.0, environment={},
            settings=dict(
                model=dict(arch=s.arch or 'small-scale 4-block ViT (64 wide, 4 heads)',
                           img_size=32, patch_size=4, decoder_width=s.decoder_width,
                           decoder_depth=s.decoder_depth, decoder_heads=s.decoder_heads,
                           norm_pix=True),
                precision='bf16 autocast' if s.bf16 else 'fp32',
                pretrain=dict(batch_size=s.pretrain_batch, lr=s.pretrain_lr,
                              optimizer='AdamW (0.9, 0.95), wd 0.05, warm-up 10% + cosine',
                              augmentation='RandomResizedCrop(0.2-1) + flip'),
                finetune=dict(batch_size=s.finetune_batch, lr=s.finetune_lr,
                              labels='all' if s.sizes.labels_all is None else s.sizes.labels_all,
                              recipe='AdamW, layer decay 0.75, drop path 0.1, label smoothing '
                              '0.1, average-pooled tokens + fc_norm'),
                linear_probe=dict(batch_size=s.linear_batch, lr=s.linear_lr,
                                  labels=s.sizes.probe, features=s.probe_features,
                                  recipe='frozen encoder, BatchNorm without affine + linear, '
                                  'SGD momentum 0.9'),
                data=dict(root=args.data_root, sizes=s.sizes.__dict__,
                          test_split='full 10k' if s.sizes.test is None else s.sizes.test),
                workers=s.workers),
            seeds=list(s.seeds), mask_ratios=list(MASK_RATIOS), headline_mask_ratio=HEADLINE_RATIO,
            plan={}, logistic_regression={}, runs=[], linear_probe_curve=[],
            finetune=dict(seeds=[], accuracies=[], mean=None), summary={}, skipped=[],
            notes=list(s.notes))
        self.checkpoints: Dict[tuple, str] = {}
        self.baseline = None

    # -- bookkeeping ---------------------------------------------------------------------------
    def seconds_left(self) -> float:
        return self.deadline - self.reserve - time.time()

    def log(self, message: str) -> None:
        print(f'[evidence {time.time() - STARTED:6.1f} s] {message}', flush=True)

    def save(self) -> None:
        self.record['wall_seconds'] = round(time.time() - STARTED, 1)
        self._summarise()
        os.makedirs(self.args.out, exist_ok=True)
        for name, text in (('evidence.json', json.dumps(self.record, indent=1)),
                           ('evidence.md', markdown(self.record))):
            path = osp.join(self.args.out, name)
            with open(path + '.tmp', 'w') as f:
                f.write(text + '\n')
            os.replace(path + '.tmp', path)

    # -- configs -------------------------------------------------------------------------------
    def configure(self, kind: str):
        """A function that sets the device-dependent parts of a run's config."""
        s, data_root, cuda = self.settings, self.args.data_root, self.args.device == 'cuda'

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
            # Evaluated once, by execute() after training: not also by the loop at its end.
            cfg.train_cfg.val_begin = 10**9
            if kind == 'linear':
                backbone.update(out_type=s.probe_features, final_norm=True,
                                frozen_stages=s.layers)
                cfg.model.neck.input_features = s.width
                cfg.train_dataloader.batch_size = s.linear_batch
                cfg.optim_wrapper.optimizer.lr = s.linear_lr
            else:  # finetune
                cfg.train_dataloader.batch_size = s.finetune_batch
                cfg.optim_wrapper.optimizer.lr = s.finetune_lr

        return apply

    # -- one run -------------------------------------------------------------------------------
    def run(self, kind: str, name: str, iters: int, seed: int, mask_ratio: float,
            checkpoint: Optional[str] = None, record_times: bool = False,
            stop_after: Optional[float] = None):
        from small_scale_runs import execute
        from small_scale_study import variant_options
        if self.args.dry_run:
            iters = min(iters, DRY_ITERS)
        deadline = self.deadline - self.reserve
        if stop_after is not None:
            deadline = min(deadline, time.time() + stop_after)
        hook = _stop_hook(deadline, min_iters=WARMUP_ITERS + 5 if record_times else MIN_ITERS,
                          record_times=record_times)
        kwargs = dict(checkpoint=checkpoint)
        if kind == 'pretrain':
            kwargs = dict(pretrain_options=variant_options(dict(
                mask_ratio=mask_ratio, decoder_depth=self.settings.decoder_depth)))
        elif kind == 'finetune':
            kwargs['labels'] = 'all'
        started = time.time()
        result, _ = execute(kind, name, self.work_dir, iters, seed=seed, sizes=self.settings.sizes,
                            threads=self.settings.threads, configure=self.configure(kind),
                            hooks=[hook], **kwargs)
        entry = dict(name=name, kind=kind, seed=seed, mask_ratio=mask_ratio, iters=result.iters,
                     iters_planned=iters, truncated=hook.stopped_at is not None,
                     batch_size=result.batch_size, train_seconds=round(result.train_seconds, 2),
                     eval_seconds=round(result.eval_seconds, 2),
                     total_seconds=round(time.time() - started, 2),
                     accuracy=None if result.top1 is None else result.top1 / 100.0,
                     loss_first=result.loss_first, loss_last=result.loss_last)
        entry['checkpoint'] = result.checkpoint
        accuracy = '' if entry['accuracy'] is None else f" accuracy {entry['accuracy']:.4f}"
        loss = ('' if result.loss_last is None else
                f' loss {result.loss_first:.4f} -> {result.loss_last:.4f}')
        self.log(f"{name}: {result.iters}/{iters} iters in {result.train_seconds:.1f} s"
                 f"{' (truncated at the deadline)' if entry['truncated'] else ''}{loss}"
                 f'{accuracy}')
        return entry, hook

    def skip(self, name: str, why: str) -> None:
        self.record['skipped'].append(dict(name=name, reason=why))
        self.log(f'{name}: skipped ({why})')

    # -- phases --------------------------------------------------------------------------------
    def calibrate(self) -> dict:
        """Seconds per pretraining iteration at mask 0.75, data loading included: a real
        Runner pretraining stopped after ``calibration_seconds`` (3 iterations in a dry run)."""
        s = self.settings
        started = time.time()
        if self.args.dry_run:
            entry, hook = self.run('pretrain', 'calibration', DRY_ITERS, 0, HEADLINE_RATIO,
                                   record_times=True)
        else:
            entry, hook = self.run('pretrain', 'calibration', 10**6, 0, HEADLINE_RATIO,
                                   record_times=True, stop_after=s.calibration_seconds)
        times = hook.times
        skip = min(WARMUP_ITERS, max(0, len(times) - 3))
        per_iter = ((times[-1] - times[skip]) / (len(times) - 1 - skip)
                    if len(times) - 1 - skip > 0 else entry['train_seconds'] / max(1, len(times)))
        total = time.time() - started
        overhead = max(0.5, total - per_iter * len(times))
        calibration = dict(pretrain_seconds_per_iter=per_iter, iters=len(times),
                           seconds=round(total, 2), overhead_seconds_per_run=round(overhead, 2),
                           images_per_second=s.pretrain_batch / per_iter)
        shutil.rmtree(osp.join(self.work_dir, 'calibration'), ignore_errors=True)
        return calibration

    def cost_factor(self, mask_ratio: float) -> float:
        s = self.settings
        return pretrain_cost_factor(mask_ratio, s.decoder_depth, HEADLINE_RATIO, s.decoder_depth,
                                    num_patches=64, encoder_layers=s.layers,
                                    encoder_width=s.width, decoder_width=s.decoder_width)

    def per_image_ratio(self, kind: str) -> float:
        """Compute per image of a classification step relative to a pretraining step (mask
        0.75): the encoder on all 65 tokens, forward + backward (fine-tuning) or forward only
        (probe), against the encoder on 17 tokens and the decoder on 65, both ways."""
        s = self.settings
        encoder_all = s.layers * 65 * s.width**2
        pretrain = 3 * (s.layers * 17 * s.width**2 + s.decoder_depth * 65 * s.decoder_width**2)
        return (3 if kind == 'finetune' else 1) * encoder_all / pretrain

    def plan(self, calibration: dict) -> dict:
        """Iterations of the pretrainings (all alike) and of the probes (all alike)."""
        s = self.settings
        per_iter = calibration['pretrain_seconds_per_iter']
        overhead = calibration['overhead_seconds_per_run']
        linear_iter = per_iter * max(0.35, self.per_image_ratio('linear') * s.linear_batch /
                                     s.pretrain_batch)
        finetune_iter = per_iter * self.per_image_ratio('finetune') * s.finetune_batch / \
            s.pretrain_batch
        test_images = 10000 if s.sizes.test is None else s.sizes.test
        # Evaluation: the forward passes, and the test images through the pipeline, costed at
        # most a pretraining image's share of a measured iteration (data loading included).
        eval_seconds = (overhead / 2 + test_images / s.val_batch * linear_iter +
                        test_images * per_iter / s.pretrain_batch)
        n_pre = len(s.seeds) * len(MASK_RATIOS)
        n_eval = n_pre + len(s.seeds)
        fixed = (n_pre + n_eval) * overhead + n_eval * eval_seconds
        compute = max(0.0, self.seconds_left() - fixed) * SAFETY
        factors = sum(self.cost_factor(r) for r in MASK_RATIOS) * len(s.seeds)
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

    def fits(self, seconds: float) -> bool:
        return self.args.dry_run or seconds <= self.seconds_left()

    def execute(self) -> None:
        from small_scale_runs import cache_fashion_mnist_reads
        s = self.settings
        if not _has_fmnist(self.args.data_root):
            raise FileNotFoundError(f'Fashion-MNIST IDX files {list(FMNIST_FILES)} not found in '
                                    f'{self.args.data_root!r}: pass --data-root')
        self.record['environment'] = environment(self.args.device)
        self.log(f"environment: {self.record['environment']}")
        cache_fashion_mnist_reads()
        try:  # the probes' and fine-tunings' classifier: imported before the plan is made
            import mmpretrain.models  # noqa: F401
        except Exception as err:
            raise RuntimeError(
                f'import mmpretrain.models fails ({type(err).__name__}: {err}): the probes and '
                "fine-tunings need mmpretrain's classifier (docs/installation.md, "
                '"Compatibility with transformers")') from err
        baseline = self.baseline = start_logistic_regression(
            s.sizes, self.args.data_root, max_iter=20 if self.args.dry_run else 200)

        calibration = self.calibrate()
        plan = self.plan(calibration)
        plan['calibration'] = calibration
        self.record['plan'] = plan
        self.log(f'calibration {calibration}; plan {plan}')
        self.save()
        est = plan['estimates']

        # Pretraining: the headline mask ratio of every seed first, then the curve.
        order = [(seed, HEADLINE_RATIO) for seed in s.seeds] + [
            (seed, r) for seed in s.seeds for r in MASK_RATIOS if r != HEADLINE_RATIO]
        for seed, ratio in order:
            name = f'pretrain_mask{ratio}_seed{seed}'
            need = plan['pretrain_iters'] * calibration['pretrain_seconds_per_iter'] * \
                self.cost_factor(ratio) + est['overhead_seconds']
            if not self.fits(need * 0.8):
                self.skip(name, f'{self.seconds_left():.0f} s left, ~{need:.0f} s needed')
                continue
            entry, _ = self.run('pretrain', name, plan['pretrain_iters'], seed, ratio)
            self.checkpoints[(seed, ratio)] = entry.pop('checkpoint')
            self.record['runs'].append(entry)
            self.save()

        # Linear probes: the headline ones first.
        probe_order = [key for key in order if key in self.checkpoints]
        for seed, ratio in probe_order:
            name = f'linear_mask{ratio}_seed{seed}'
            need = plan['linear_iters'] * est['linear_seconds_per_iter'] + est['eval_seconds'] \
                + est['overhead_seconds']
            if not self.fits(need):
                self.skip(name, f'{self.seconds_left():.0f} s left, ~{need:.0f} s needed')
                continue
            entry, _ = self.run('linear', name, plan['linear_iters'], seed, ratio,
                                checkpoint=self.checkpoints[(seed, ratio)])
            entry.pop('checkpoint')
            self.record['runs'].append(entry)
            self.save()

        # The logistic regression ran meanwhile in another process.
        self.record['logistic_regression'] = baseline.result()
        self.save()

        # Fine-tuning of the headline pretrainings, with what is left.
        finetunes = [seed for seed in s.seeds if (seed, HEADLINE_RATIO) in self.checkpoints]
        probes = [r for r in self.record['runs'] if r['kind'] == 'linear']
        if probes:  # measured: evaluation and fixed costs of a classification run
            est['eval_seconds'] = max(r['eval_seconds'] for r in probes)
            est['overhead_seconds'] = max(
                est['overhead_seconds'],
                max(r['total_seconds'] - r['train_seconds'] - r['eval_seconds'] for r in probes))
        if finetunes:
            fixed = len(finetunes) * (est['eval_seconds'] + est['overhead_seconds'])
            seconds = max(0.0, self.seconds_left() - fixed) * SAFETY / len(finetunes)
            finetune_iters = iters_for(seconds, est['finetune_seconds_per_iter'])
            plan['finetune_iters'] = finetune_iters
            self.save()
            for seed in finetunes:
                name = f'finetune_mask{HEADLINE_RATIO}_seed{seed}'
                need = (finetune_iters * est['finetune_seconds_per_iter'] + est['eval_seconds'] +
                        est['overhead_seconds'])
                if not self.fits(need * 0.5):
                    self.skip(name, f'{self.seconds_left():.0f} s left, ~{need:.0f} s needed')
                    continue
                entry, _ = self.run('finetune', name, finetune_iters, seed, HEADLINE_RATIO,
                                    checkpoint=self.checkpoints[(seed, HEADLINE_RATIO)])
                entry.pop('checkpoint')
                self.record['runs'].append(entry)
                self.save()

    def _summarise(self) -> None:
        runs = self.record['runs']
        seeds = self.record['seeds']

        def accuracies(kind, ratio):
            found = {r['seed']: r['accuracy'] for r in runs if r['kind'] == kind
                     and r['mask_ratio'] == ratio and r['accuracy'] is not None}
            kept = [seed for seed in seeds if seed in found]
            values = [found[seed] for seed in kept]
            return kept, values, (sum(values) / len(values) if values else None)

        self.record['linear_probe_curve'] = []
        for ratio in MASK_RATIOS:
            kept, values, mean = accuracies('linear', ratio)
            self.record['linear_probe_curve'].append(dict(mask_ratio=ratio, seeds=kept,
                                                          accuracies=values, mean=mean))
        kept, values, mean = accuracies('finetune', HEADLINE_RATIO)
        self.record['finetune'] = dict(mask_ratio=HEADLINE_RATIO, seeds=kept, accuracies=values,
                                       mean=mean)
        _, _, probe_mean = accuracies('linear', HEADLINE_RATIO)
        baseline = (self.record['logistic_regression'] or {}).get('accuracy')

        def clears(value):
            return None if value is None or baseline is None else bool(value > baseline)

        self.record['summary'] = dict(
            baseline_accuracy=baseline, reference_accuracy=REFERENCE_ACCURACY,
            finetune_accuracy_mean=mean, linear_probe_accuracy_mean=probe_mean,
            finetune_clears_baseline=clears(mean), linear_probe_clears_baseline=clears(probe_mean))


# ------------------------------------------------------------------------- helpers
def environment(device: str) -> dict:
    import platform

    import torch
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cpu_count=os.cpu_count())
    for module in ('mmengine', 'mmcv', 'mmpretrain'):
        try:
            info[module] = __import__(module).__version__
        except Exception as err:  # noqa: BLE001 (reported, not needed)
            info[module] = f'not importable: {err}'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(f'--device cuda: torch {torch.__version__} sees no GPU')
        major, minor = torch.cuda.get_device_capability(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_capability=f'{major}.{minor}',
                    gpu_count=torch.cuda.device_count(), driver=_driver_version())
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 evaluation
        torch.backends.cudnn.allow_tf32 = True
    return info


def _driver_version() -> Optional[str]:
    import subprocess
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=15)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _logistic_regression(sizes: dict, data_root: str, max_iter: int) -> dict:
    """In a child process: small_scale_runs' raw-pixel logistic regression, two BLAS threads."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    from small_scale_runs import logistic_regression_baseline
    with threadpool_limits(limits=2), warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        result = logistic_regression_baseline(DataSizes(**sizes), max_iter=max_iter,
                                              data_root=data_root)
    return dict(accuracy=result['top1'] / 100.0,
                accuracy_full_test=result['top1_full_test'] / 100.0,
                seconds=round(result['seconds'], 2), max_iter=max_iter, labels=sizes['probe'],
                classifier='sklearn LogisticRegression(C=0.1) on raw pixels / 255',
                reference_accuracy=REFERENCE_ACCURACY)


class _Deferred:
    """The logistic regression, computed in a spawned process while the GPU trains."""

    def __init__(self, sizes: DataSizes, data_root: str, max_iter: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'))
        self.future = self.pool.submit(_logistic_regression, dict(sizes.__dict__), data_root,
                                       max_iter)

    def result(self) -> dict:
        try:
            return self.future.result()
        except Exception as err:  # noqa: BLE001 (recorded in the JSON)
            return dict(accuracy=None, error=f'{type(err).__name__}: {err}',
                        reference_accuracy=REFERENCE_ACCURACY)
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)


def start_logistic_regression(sizes: DataSizes, data_root: str, max_iter: int) -> _Deferred:
    return _Deferred(sizes, data_root, max_iter)


def _pct(value) -> str:
    return '-' if value is None else f'{100 * value:.2f}%'


def markdown(record: dict) -> str:
    """evidence.md: the headline, the mask-ratio curve, every run."""
    s, summary = record['settings'], record['summary']
    env = record['environment']
    lines = [f"# MAE evidence run on Fashion-MNIST ({record['device']}"
             f"{', DRY RUN: tiny sizes, not a measurement' if record['dry_run'] else ''})", '',
             f"Status: {record['status']}" + (f" ({record['error']})" if record['error'] else '')
             + f". Wall time {record['wall_seconds']:.0f} s of a {record['budget_minutes']:g}-min "
             'budget.', '', f"Command: `{record['command']}`", '']
    if env:
        lines += ['Environment: ' + ', '.join(f'{k} {v}' for k, v in env.items()), '']
    lines += [f"Model: {s['model']['arch']}, 32 px, patch 4; decoder {s['model']['decoder_depth']}"
              f" x {s['model']['decoder_width']}; {s['precision']}. Seeds {record['seeds']}.",
              '', f"| | accuracy ({s['data']['test_split']} test images) | clears the raw-pixel "
              'baseline? |',
              '|---|---|---|',
              f"| logistic regression on raw pixels (this run) | "
              f"{_pct(summary.get('baseline_accuracy'))} | (reference "
              f"{_pct(summary.get('reference_accuracy'))}) |",
              f"| MAE (mask {record['headline_mask_ratio']}) + fine-tuning, mean over seeds | "
              f"{_pct(summary.get('finetune_accuracy_mean'))} | "
              f"{summary.get('finetune_clears_baseline')} |",
              f"| MAE (mask {record['headline_mask_ratio']}) + linear probe, mean over seeds | "
              f"{_pct(summary.get('linear_probe_accuracy_mean'))} | "
              f"{summary.get('linear_probe_clears_baseline')} |", '',
              '## Linear probe vs. mask ratio', '', '| mask ratio | per seed | mean |',
              '|---|---|---|']
    for point in record['linear_probe_curve']:
        per_seed = ', '.join(f'seed {seed}: {_pct(a)}'
                             for seed, a in zip(point['seeds'], point['accuracies']))
        lines.append(f"| {point['mask_ratio']} | {per_seed or '-'} | {_pct(point['mean'])} |")
    lines += ['', '## Runs', '', '| run | iterations (planned) | batch | train s | eval s | '
              'loss first -> last | accuracy |', '|---|---|---|---|---|---|---|']
    for run in record['runs']:
        loss = ('-' if run['loss_last'] is None else
                f"{run['loss_first']:.4f} -> {run['loss_last']:.4f}")
        lines.append(f"| {run['name']} | {run['iters']} ({run['iters_planned']})"
                     f"{' truncated' if run['truncated'] else ''} | {run['batch_size']} | "
                     f"{run['train_seconds']:.1f} | {run['eval_seconds']:.1f} | {loss} | "
                     f"{_pct(run['accuracy'])} |")
    for item in record['skipped']:
        lines.append(f"| {item['name']} | skipped: {item['reason']} | | | | | |")
    if record['notes']:
        lines += ['', 'Notes:'] + [f'- {note}' for note in record['notes']]
    lines += ['', f"Every number: evidence.json. Plan: `{json.dumps(record['plan'])}`"]
    return '\n'.join(lines)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # before torch is imported
    run = EvidenceRun(args, argv)

    def stopped(signum, frame):  # a time box ending this run: still write the JSON
        raise KeyboardInterrupt(f'stopped from outside (signal {signum})')

    signal.signal(signal.SIGTERM, stopped)
    run.log(f'budget {args.budget_minutes} min, device {args.device}, dry run {args.dry_run}, '
            f'data {args.data_root}, out {args.out}, work dir {run.work_dir}')
    try:
        import mae_mm  # noqa: F401  (registries)
        run.execute()
        complete = not run.record['skipped'] and not any(r['truncated']
                                                         for r in run.record['runs'])
        run.record['status'] = 'complete' if complete else 'partial'
    except BaseException as err:  # written down, then raised again
        run.record['status'] = 'failed'
        run.record['error'] = f'{type(err).__name__}: {err}'
        raise
    finally:
        if run.baseline is not None:
            run.baseline.pool.shutdown(wait=False, cancel_futures=True)
        run.save()
        if not args.work_dir:
            shutil.rmtree(run.work_dir, ignore_errors=True)
        run.log(f"{run.record['status']}: {osp.join(args.out, 'evidence.json')}; summary "
                f"{run.record['summary']}")
    return run.record


if __name__ == '__main__':
    main()
