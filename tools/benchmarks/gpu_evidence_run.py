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

This module runs the phases (``EvidenceRun``); ``gpu_evidence_setup.py`` holds the settings,
config changes, plan and deadline hook, ``gpu_evidence_baseline.py`` the logistic regression and
``gpu_evidence_report.py`` the environment, the summary and the two files.
"""
import time

STARTED = time.time()  # run as a script, the budget counts from here, imports included

import argparse  # noqa: E402
import os  # noqa: E402
import os.path as osp  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Dict, List, Optional  # noqa: E402

TOOL_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(TOOL_DIR))
for path in (REPO_ROOT, TOOL_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

from gpu_evidence_baseline import BackgroundLogisticRegression  # noqa: E402
from gpu_evidence_report import environment, summarise, write_report  # noqa: E402
from gpu_evidence_setup import (DRY_ITERS, HEADLINE_RATIO, MASK_RATIOS, SAFETY,  # noqa: E402
                                WARMUP_ITERS, config_updater, cost_factor, plan_iterations,
                                settings_for, settings_record, stop_hook)
from small_scale_plan import MIN_ITERS, iters_for  # noqa: E402
from small_scale_runs import FMNIST_ROOT  # noqa: E402

DEFAULT_DATA_ROOTS = (osp.join(REPO_ROOT, '.gpu_carry', 'data', 'fashion-mnist'), FMNIST_ROOT)
FMNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


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


# ------------------------------------------------------------------------------- the run
class EvidenceRun:
    """The evidence run's state: its settings, deadline, record and pretrained checkpoints.

    Args:
        args: ``parse_args``'s namespace.
        argv: the command line's arguments, for the record.
        started: when the budget began (``time.time()``); now if not given. The script passes
            the time it was started, so that its imports count.
    """

    def __init__(self, args: argparse.Namespace, argv: List[str],
                 started: Optional[float] = None):
        self.args = args
        self.started = time.time() if started is None else started
        self.settings = settings_for(args.device, args.dry_run)
        self.deadline = self.started + args.budget_minutes * 60
        self.reserve = 6.0 + 0.03 * args.budget_minutes * 60  # report, clean-up, slack
        self.work_dir = args.work_dir or tempfile.mkdtemp(prefix='mae_mm_evidence_')
        s = self.settings
        self.record = dict(
            tool='tools/benchmarks/gpu_evidence_run.py',
            command='python tools/benchmarks/gpu_evidence_run.py ' + ' '.join(argv),
            status='running', error=None, dry_run=args.dry_run, device=args.device,
            budget_minutes=args.budget_minutes, wall_seconds=0.0, environment={},
            settings=settings_record(s, args.data_root),
            seeds=list(s.seeds), mask_ratios=list(MASK_RATIOS), headline_mask_ratio=HEADLINE_RATIO,
            plan={}, logistic_regression={}, runs=[], linear_probe_curve=[],
            finetune=dict(seeds=[], accuracies=[], mean=None), summary={}, skipped=[],
            notes=list(s.notes))
        self.checkpoints: Dict[tuple, str] = {}
        self.baseline: Optional[BackgroundLogisticRegression] = None

    # -- bookkeeping ---------------------------------------------------------------------------
    def seconds_left(self) -> float:
        return self.deadline - self.reserve - time.time()

    def log(self, message: str) -> None:
        print(f'[evidence {time.time() - self.started:6.1f} s] {message}', flush=True)

    def save(self) -> None:
        """Rewrite evidence.json and evidence.md with the record as it stands."""
        self.record['wall_seconds'] = round(time.time() - self.started, 1)
        summarise(self.record)
        write_report(self.record, self.args.out)

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
        hook = stop_hook(deadline, min_iters=WARMUP_ITERS + 5 if record_times else MIN_ITERS,
                         record_times=record_times)
        kwargs = dict(checkpoint=checkpoint)
        if kind == 'pretrain':
            kwargs = dict(pretrain_options=variant_options(dict(
                mask_ratio=mask_ratio, decoder_depth=self.settings.decoder_depth)))
        elif kind == 'finetune':
            kwargs['labels'] = 'all'
        started = time.time()
        result, _ = execute(kind, name, self.work_dir, iters, seed=seed, sizes=self.settings.sizes,
                            threads=self.settings.threads,
                            configure=config_updater(self.settings, kind, self.args.data_root,
                                                     self.args.device == 'cuda'),
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

    def run_if_it_fits(self, need: float, share: float, kind: str, name: str, iters: int,
                       seed: int, mask_ratio: float,
                       checkpoint: Optional[str] = None) -> Optional[str]:
        """``run`` and record it where ``share`` of the ``need``ed seconds are left, else list
        it as skipped.

        Returns:
            The run's checkpoint, or None where it was skipped.
        """
        if not self.fits(need * share):
            self.skip(name, f'{self.seconds_left():.0f} s left, ~{need:.0f} s needed')
            return None
        entry, _ = self.run(kind, name, iters, seed, mask_ratio, checkpoint=checkpoint)
        saved = entry.pop('checkpoint')
        self.record['runs'].append(entry)
        self.save()
        return saved

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
        """A pretraining iteration's compute at ``mask_ratio``, relative to mask 0.75."""
        return cost_factor(self.settings, mask_ratio)

    def plan(self, calibration: dict) -> dict:
        """Iterations of the pretrainings and probes that fit the time left."""
        return plan_iterations(self.settings, calibration, self.seconds_left())

    def fits(self, seconds: float) -> bool:
        return self.args.dry_run or seconds <= self.seconds_left()

    def execute(self) -> None:
        """Every phase in turn, the record saved after each run: the calibration and plan,
        the pretrainings, the linear probes, the baseline's result, the fine-tunings."""
        self.prepare()
        calibration = self.calibrate()
        plan = self.plan(calibration)
        plan['calibration'] = calibration
        self.record['plan'] = plan
        self.log(f'calibration {calibration}; plan {plan}')
        self.save()
        pretrained = self.pretrain_all(plan)
        self.probe_all(plan, pretrained)
        # The logistic regression ran meanwhile in another process.
        self.record['logistic_regression'] = self.baseline.result()
        self.save()
        self.finetune_all(plan)

    def prepare(self) -> None:
        """Check the data and mmpretrain's classifier, record the environment and start the
        logistic regression in the background."""
        from small_scale_runs import cache_fashion_mnist_reads
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
        self.baseline = BackgroundLogisticRegression(
            self.settings.sizes, self.args.data_root, max_iter=20 if self.args.dry_run else 200)

    def pretrain_all(self, plan: dict) -> List[tuple]:
        """The pretrainings, the headline mask ratio of every seed first, then the curve.

        Returns:
            (seed, mask ratio) of the pretrainings that ran, in that order.
        """
        s, est = self.settings, plan['estimates']
        order = [(seed, HEADLINE_RATIO) for seed in s.seeds] + [
            (seed, r) for seed in s.seeds for r in MASK_RATIOS if r != HEADLINE_RATIO]
        for seed, ratio in order:
            need = plan['pretrain_iters'] * plan['calibration']['pretrain_seconds_per_iter'] * \
                self.cost_factor(ratio) + est['overhead_seconds']
            checkpoint = self.run_if_it_fits(need, 0.8, 'pretrain',
                                             f'pretrain_mask{ratio}_seed{seed}',
                                             plan['pretrain_iters'], seed, ratio)
            if checkpoint is not None:
                self.checkpoints[(seed, ratio)] = checkpoint
        return [key for key in order if key in self.checkpoints]

    def probe_all(self, plan: dict, pretrained: List[tuple]) -> None:
        """A linear probe of each pretraining, in the pretrainings' order."""
        est = plan['estimates']
        need = plan['linear_iters'] * est['linear_seconds_per_iter'] + est['eval_seconds'] + \
            est['overhead_seconds']
        for seed, ratio in pretrained:
            self.run_if_it_fits(need, 1.0, 'linear', f'linear_mask{ratio}_seed{seed}',
                                plan['linear_iters'], seed, ratio,
                                checkpoint=self.checkpoints[(seed, ratio)])

    def finetune_all(self, plan: dict) -> None:
        """Fine-tuning of the headline pretrainings, planned on what is left and on the costs
        the probes measured (``plan['finetune_iters']``)."""
        est = plan['estimates']
        finetunes = [seed for seed in self.settings.seeds
                     if (seed, HEADLINE_RATIO) in self.checkpoints]
        probes = [r for r in self.record['runs'] if r['kind'] == 'linear']
        if probes:  # measured: evaluation and fixed costs of a classification run
            est['eval_seconds'] = max(r['eval_seconds'] for r in probes)
            est['overhead_seconds'] = max(
                est['overhead_seconds'],
                max(r['total_seconds'] - r['train_seconds'] - r['eval_seconds'] for r in probes))
        if not finetunes:
            return
        fixed = len(finetunes) * (est['eval_seconds'] + est['overhead_seconds'])
        seconds = max(0.0, self.seconds_left() - fixed) * SAFETY / len(finetunes)
        finetune_iters = iters_for(seconds, est['finetune_seconds_per_iter'])
        plan['finetune_iters'] = finetune_iters
        self.save()
        need = (finetune_iters * est['finetune_seconds_per_iter'] + est['eval_seconds'] +
                est['overhead_seconds'])
        for seed in finetunes:
            self.run_if_it_fits(need, 0.5, 'finetune', f'finetune_mask{HEADLINE_RATIO}_seed{seed}',
                                finetune_iters, seed, HEADLINE_RATIO,
                                checkpoint=self.checkpoints[(seed, HEADLINE_RATIO)])


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''  # before torch is imported
    run = EvidenceRun(args, argv, started=STARTED)

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
            run.baseline.cancel()
        run.save()
        if not args.work_dir:
            shutil.rmtree(run.work_dir, ignore_errors=True)
        run.log(f"{run.record['status']}: {osp.join(args.out, 'evidence.json')}; summary "
                f"{run.record['summary']}")
    return run.record


if __name__ == '__main__':
    main()
