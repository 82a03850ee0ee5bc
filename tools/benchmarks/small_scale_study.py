"""Small-scale reproduction of MAE's main findings on Fashion-MNIST, on a CPU, in a time budget.

    python tools/benchmarks/small_scale_study.py --budget-minutes 45          # the full study
    python tools/benchmarks/small_scale_study.py --budget-minutes 1 --smoke   # CI smoke run

Every run is an mmengine Runner on a config of ``configs/small_scale/`` (a 4-block, 64-wide ViT
with 4x4 patches on 32 px upsampled Fashion-MNIST), with fixed seeds:

1. MAE pretraining then fine-tuning vs. training from scratch, all labels and 10% labels,
   one shared pretraining, 3 fine-tuning seeds each;
2. linear probe of the MAE encoder vs. the same encoder at random init vs. raw-pixel logistic
   regression (10k labels each);
3. mask ratio sweep 0.25 / 0.5 / 0.75 / 0.9 and 4. decoder depth 1 vs 4, norm-pix on/off,
   each with fine-tuning (10% labels, seed 0) and linear-probe accuracy; these six
   pretrainings (default included) are alike and shorter than the main one;
5. a reconstruction figure of test images.

Iterations are planned from the budget and the measured speed, re-planned before each phase
(see ``small_scale_plan.py``). Writes ``<out>/small_scale.md``, ``small_scale.json`` and PNG
plots; checkpoints go to ``--work-dir``.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import time

TOOL_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(TOOL_DIR))
for path in (REPO_ROOT, TOOL_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

from small_scale_plan import (CostModel, PhaseRun, fit_ablations, plan_phase,  # noqa: E402
                              pretrain_cost_factor)
from small_scale_runs import DataSizes, execute  # noqa: E402

DEFAULT_VARIANT = dict(mask_ratio=0.75, decoder_depth=4, norm_pix=True)
# Ablation pretrainings in priority order: the last ones are dropped first when time is short.
ABLATIONS = {
    'mask-0.25': dict(mask_ratio=0.25),
    'mask-0.9': dict(mask_ratio=0.9),
    'decoder-depth-1': dict(decoder_depth=1),
    'no-norm-pix': dict(norm_pix=False),
    'mask-0.5': dict(mask_ratio=0.5),
}
SMOKE_ITERS = 2
# The smoke run covers every kind of run and plot with fewer variants (CI time).
SMOKE_ABLATIONS = ['mask-0.25', 'decoder-depth-1', 'no-norm-pix']
SMOKE_SIZES = DataSizes(pretrain=256, labels_all=256, labels_10pct=64, probe=256, test=200)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--budget-minutes', type=float, required=True,
                        help='wall-clock budget of the whole study; iterations scale with it')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny data subsets, one seed, a few iterations: a CI check that '
                        'every step runs, not a measurement')
    parser.add_argument('--out', default=osp.join(REPO_ROOT, 'docs', 'results'),
                        help='folder of the results page, JSON and plots')
    parser.add_argument('--work-dir', default=osp.join(REPO_ROOT, 'work_dirs', 'small_scale'),
                        help='checkpoints and Runner logs (emptied first)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads; 1 is fastest on a shared small machine')
    args = parser.parse_args(argv)
    if args.budget_minutes <= 0:
        parser.error('--budget-minutes must be > 0, e.g. 45 (full study) or 1 with --smoke')
    return args


def variant_options(variant: dict) -> dict:
    """Config overrides of a pretraining variant."""
    settings = dict(DEFAULT_VARIANT, **variant)
    return {'model.backbone.mask_ratio': settings['mask_ratio'],
            'model.neck.decoder_depth': settings['decoder_depth'],
            'model.head.norm_pix': settings['norm_pix']}


def variant_factor(variant: dict) -> float:
    settings = dict(DEFAULT_VARIANT, **variant)
    return pretrain_cost_factor(settings['mask_ratio'], settings['decoder_depth'])


def calibrate(sizes: DataSizes, threads: int, repeats: int = 3) -> CostModel:
    """Time a few steps of the pretraining and classification models on random inputs (a
    measurement only; all training goes through the Runner) for the first plan."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.structures import DataSample

    from mae_mm.registry import MODELS
    from small_scale_runs import CONFIG_DIR, CONFIGS
    init_default_scope('mae_mm')
    torch.set_num_threads(threads)

    def timed(step):
        step()  # warm-up
        started = time.time()
        for _ in range(repeats):
            step()
        return (time.time() - started) / repeats

    pre_cfg = Config.fromfile(osp.join(CONFIG_DIR, CONFIGS['pretrain']))
    mae = MODELS.build(pre_cfg.model)
    pre_batch = torch.randn(pre_cfg.train_dataloader.batch_size, 3, 32, 32)
    pre_step = timed(lambda: mae.loss(pre_batch)['loss'].backward())
    cls_cfg = Config.fromfile(osp.join(CONFIG_DIR, CONFIGS['scratch']))
    classifier = MODELS.build(cls_cfg.model)
    ft_batch = cls_cfg.train_dataloader.batch_size
    images, samples = torch.randn(ft_batch, 3, 32, 32), [
        DataSample().set_gt_label(0) for _ in range(ft_batch)]
    ft_step = timed(lambda: classifier(images, samples, mode='loss')['loss'].backward())
    with torch.no_grad():
        forward = timed(lambda: classifier(torch.randn(256, 3, 32, 32), mode='tensor')) / 256
    per_sample_data = 2e-4  # resize + pack of one 28 px image, measured ~0.2 ms
    ft_iter = ft_step + ft_batch * per_sample_data
    test_images = 10000 if sizes.test is None else sizes.test
    return CostModel(
        seconds_per_iter=dict(
            pretrain=pre_step + len(pre_batch) * per_sample_data, finetune=ft_iter,
            linear=128 * (forward + per_sample_data)),
        eval_seconds=test_images * (forward + per_sample_data),
        overhead_seconds=3.0)


class Study:
    """Runs the phases, records every result, writes the JSON and the results page."""

    def __init__(self, args: argparse.Namespace, argv) -> None:
        self.args = args
        self.started = time.time()
        self.budget_seconds = args.budget_minutes * 60
        self.deadline = self.started + self.budget_seconds
        # Kept back for the report, the figure and the baseline.
        self.reserve = 20 + 0.03 * self.budget_seconds
        self.usable = self.budget_seconds - self.reserve
        self.sizes = SMOKE_SIZES if args.smoke else DataSizes()
        self.seeds = [0] if args.smoke else [0, 1, 2]
        self.record = dict(
            command='python tools/benchmarks/small_scale_study.py ' + ' '.join(argv),
            budget_minutes=args.budget_minutes, smoke=args.smoke, threads=args.threads,
            sizes=self.sizes.__dict__, seeds=self.seeds, runs=[], phases={}, dropped=[],
            notes=[])

    # -- bookkeeping ---------------------------------------------------------------------------
    def seconds_left(self) -> float:
        return self.deadline - self.reserve - time.time()

    def log(self, message: str) -> None:
        elapsed = time.time() - self.started
        print(f'[small_scale {elapsed / 60:6.1f} min] {message}', flush=True)

    def save(self) -> None:
        from small_scale_report import write_report
        self.record['wall_seconds'] = time.time() - self.started
        os.makedirs(self.args.out, exist_ok=True)
        with open(osp.join(self.args.out, 'small_scale.json'), 'w') as f:
            json.dump(self.record, f, indent=1)
        write_report(self.record, self.args.out)

    def run(self, kind, name, iters, speed, factor=1.0, **kwargs):
        """One Runner run; its speed updates the cost model, its result the record."""
        variant = kwargs.pop('variant_name', '')
        if self.args.smoke:
            iters = min(iters, SMOKE_ITERS)
        result, model = execute(kind, name, self.args.work_dir, iters, sizes=self.sizes,
                                threads=self.args.threads, **kwargs)
        self.costs.update(speed, result.train_seconds, iters, factor)
        if result.eval_seconds:
            self.costs.eval_seconds = result.eval_seconds
        entry = result.to_dict()
        entry['variant'] = variant
        self.record['runs'].append(entry)
        top1 = '' if result.top1 is None else f' top1 {result.top1:.2f}%'
        loss = ('' if result.loss_last is None else
                f' loss {result.loss_first:.4f} -> {result.loss_last:.4f}')
        self.log(f'{name}: {iters} iters in {result.train_seconds:.0f} s{loss}{top1}')
        return result, model

    # -- phases --------------------------------------------------------------------------------
    def main_runs(self):
        runs = []
        for _ in self.seeds:
            runs += [PhaseRun('ft', 'finetune_full')] * 2 + [PhaseRun('ft', 'finetune_10pct')] * 2
        return runs + [PhaseRun('probe', 'linear')] * 2

    def ablation_runs(self, variants, with_pretraining=True):
        runs = [PhaseRun(v, 'pretrain_ablation', self.factors[v])
                for v in variants] if with_pretraining else []
        return runs + [PhaseRun(v, role) for v in variants
                       for role in ('finetune_ablation', 'linear_ablation')]

    def execute(self) -> None:
        from small_scale_runs import (cache_fashion_mnist_reads, logistic_regression_baseline,
                                      reconstruction_figure)
        cache_fashion_mnist_reads()
        os.makedirs(self.args.out, exist_ok=True)
        if osp.isdir(self.args.work_dir):
            shutil.rmtree(self.args.work_dir)
        self.costs = calibrate(self.sizes, self.args.threads,
                               repeats=1 if self.args.smoke else 3)
        self.log(f'calibration: {self.costs}')
        variants = ['default'] + (SMOKE_ABLATIONS if self.args.smoke else list(ABLATIONS))
        self.factors = {v: variant_factor(ABLATIONS.get(v, {})) for v in variants}

        # Phase A: the main pretraining, shared by the fine-tuning seeds and the probes.
        plan = plan_phase([PhaseRun('default', 'pretrain_main')],
                          self.main_runs() + self.ablation_runs(variants), self.usable,
                          self.seconds_left(), self.costs)
        self.record['phases']['pretrain'] = dict(iters=plan.iters, stretch=plan.stretch)
        self.log(f'plan A: {plan.iters} (stretch {plan.stretch:.2f})')
        default, mae = self.run('pretrain', 'pretrain_default', plan.iters['pretrain_main'],
                                'pretrain', seed=0, keep_model=True, variant_name='default',
                                pretrain_options=variant_options({}))
        figure = reconstruction_figure(mae, osp.join(self.args.out, 'small_scale_recon.png'),
                                       osp.join(self.args.work_dir, 'figure_images'))
        self.record['figures'] = dict(reconstruction=osp.basename(figure))
        del mae

        # Phase B: fine-tune vs scratch (all / 10% labels, every seed) and the probes.
        plan = plan_phase(self.main_runs(), self.ablation_runs(variants), self.usable,
                          self.seconds_left(), self.costs)
        main_iters = plan.iters
        self.record['phases']['main'] = dict(iters=main_iters, stretch=plan.stretch)
        self.log(f'plan B: {main_iters} (stretch {plan.stretch:.2f})')
        self.record['logistic_regression'] = logistic_regression_baseline(
            self.sizes, max_iter=20 if self.args.smoke else 200)
        self.log(f'logistic regression on raw pixels: {self.record["logistic_regression"]}')
        ckpt = default.checkpoint
        for index, seed in enumerate(self.seeds):
            if index > 0 and time.time() > self.deadline:
                # Far behind plan (the machine got slower): keep the seeds done, say so.
                self.record['notes'].append(f'budget exhausted: seeds {self.seeds[index:]} '
                                            'of the main comparison not run')
                self.log(self.record['notes'][-1])
                break
            for labels, role in (('all', 'finetune_full'), ('10pct', 'finetune_10pct')):
                self.run('finetune', f'finetune_{labels}_seed{seed}', main_iters[role],
                         'finetune', seed=seed, checkpoint=ckpt, labels=labels,
                         variant_name='default')
                self.run('scratch', f'scratch_{labels}_seed{seed}', main_iters[role],
                         'finetune', seed=seed, labels=labels)
            if index == 0:
                self.run('linear', 'linear_default', main_iters['linear'], 'linear', seed=0,
                         checkpoint=ckpt, variant_name='default')
                self.run('random_linear', 'linear_random_init', main_iters['linear'], 'linear',
                         seed=0)
            self.save()
        self.run_ablations(variants)
        self.record['finished'] = True
        self.save()

    def run_ablations(self, variants) -> None:
        """Phases C and D: short pretrainings of every variant (the default one included, so
        that all are pretrained alike), then fine-tune (10% labels) and probe each."""
        kept = variants if self.args.smoke else fit_ablations(
            variants, self.factors, self.usable, self.seconds_left(), self.costs)
        self.record['dropped'] = [v for v in variants if v not in kept]
        if self.record['dropped']:
            self.log(f'not enough time left for ablations {self.record["dropped"]}')
        plan = plan_phase(self.ablation_runs(kept)[:len(kept)], self.ablation_runs(kept, False),
                          self.usable, self.seconds_left(), self.costs)
        pre_iters = plan.iters['pretrain_ablation']
        self.record['phases']['ablation_pretrain'] = dict(iters=plan.iters, stretch=plan.stretch)
        self.log(f'plan C: {plan.iters} (stretch {plan.stretch:.2f})')
        checkpoints = {}
        for variant in kept:
            need = self.costs.run_seconds('pretrain_ablation', pre_iters, self.factors[variant])
            if need > self.seconds_left() and not self.args.smoke:
                self.record['dropped'].append(variant)
                self.log(f'no time left to pretrain {variant}: skipped')
                continue
            result, _ = self.run('pretrain', f'pretrain_ablation_{variant}', pre_iters,
                                 'pretrain', factor=self.factors[variant], seed=0,
                                 variant_name=variant,
                                 pretrain_options=variant_options(ABLATIONS.get(variant, {})))
            checkpoints[variant] = result.checkpoint
        plan = plan_phase(self.ablation_runs(list(checkpoints), False), [], self.usable,
                          self.seconds_left(), self.costs)
        self.record['phases']['ablation'] = dict(iters=plan.iters, stretch=plan.stretch)
        self.log(f'plan D: {plan.iters} (stretch {plan.stretch:.2f})')
        table = self.record['ablation_runs'] = {}
        for variant, checkpoint in checkpoints.items():
            ft_iters = plan.iters['finetune_ablation']
            lin_iters = plan.iters['linear_ablation']
            need = (self.costs.run_seconds('finetune_ablation', ft_iters) +
                    self.costs.run_seconds('linear_ablation', lin_iters))
            if need > self.seconds_left() and not self.args.smoke:
                self.record['dropped'].append(variant)
                self.log(f'no time left to fine-tune and probe {variant}: skipped')
                continue
            names = dict(finetune=f'ablation_finetune_10pct_{variant}',
                         linear=f'ablation_linear_{variant}')
            self.run('finetune', names['finetune'], ft_iters, 'finetune', seed=0,
                     checkpoint=checkpoint, labels='10pct', variant_name=variant)
            self.run('linear', names['linear'], lin_iters, 'linear', seed=0,
                     checkpoint=checkpoint, variant_name=variant)
            table[variant] = names
            self.save()


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    import mae_mm  # noqa: F401  (registers modules, checkpoint compatibility)
    study = Study(args, argv)
    study.log(f'budget {args.budget_minutes} min, smoke={args.smoke}, out={args.out}')
    study.execute()
    study.log(f'done in {(time.time() - study.started) / 60:.1f} min: '
              f'{osp.join(args.out, "small_scale.md")}')
    return study.record


if __name__ == '__main__':
    main()
