"""The small-scale study: its smoke run end to end, its budget planning, configs and report."""
import json
import math
import os.path as osp
import statistics
import subprocess
import sys

import pytest
from PIL import Image

from ..conftest import REPO_ROOT

BENCHMARKS = osp.join(REPO_ROOT, 'tools', 'benchmarks')
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

import small_scale_plan as plan  # noqa: E402
from small_scale_report import compare_main, spread  # noqa: E402
from small_scale_runs import DataSizes, build_config, schedule  # noqa: E402

SMOKE = DataSizes(pretrain=256, labels_all=256, labels_10pct=64, probe=256, test=200)


def logistic_regression_correct(train_size, test_size, max_iter):
    """Correct predictions of a raw-pixel logistic regression (C=0.1) fitted on the study's
    stratified draw of ``train_size`` Fashion-MNIST training images (seed 0), counted on its
    draw of ``test_size`` test images and on the whole 10k test split."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from mae_mm.datasets import FashionMNIST
    root = '/usr/share/datasets/fashion-mnist'
    train = FashionMNIST(data_root=root, split='train', num_samples=train_size, seed=0)
    test = FashionMNIST(data_root=root, split='test', num_samples=test_size, seed=0)
    full_test = FashionMNIST(data_root=root, split='test', seed=0)
    assert len(train.labels) == train_size and len(full_test.labels) == 10000
    assert np.bincount(test.labels).tolist() == [test_size // 10] * 10  # stratified

    def pixels(dataset):
        return dataset.images.reshape(len(dataset.images), -1).astype(np.float32) / 255.0

    # One BLAS thread, as in the tool's run (OMP_NUM_THREADS=1): the same fitted weights.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        classifier = LogisticRegression(C=0.1, max_iter=max_iter).fit(pixels(train),
                                                                      train.labels)
        return {name: int((classifier.predict(pixels(data)) == data.labels).sum())
                for name, data in (('test', test), ('full_test', full_test))}


def test_smoke_run_writes_page_json_and_plots(tmp_path):
    out, work = tmp_path / 'out', tmp_path / 'work'
    proc = subprocess.run(
        [sys.executable, osp.join(BENCHMARKS, 'small_scale_study.py'), '--budget-minutes', '1',
         '--smoke', '--out', str(out), '--work-dir', str(work)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env=dict(__import__('os').environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / 'small_scale.json').read_text())
    assert record['finished'] and record['smoke']
    runs = {run['name']: run for run in record['runs']}
    kinds = {run['kind'] for run in record['runs']}
    assert kinds == {'pretrain', 'finetune', 'scratch', 'linear', 'random_linear'}
    for name in ('pretrain_default', 'finetune_all_seed0', 'scratch_all_seed0',
                 'finetune_10pct_seed0', 'scratch_10pct_seed0', 'linear_default',
                 'linear_random_init', 'pretrain_ablation_default',
                 'pretrain_ablation_mask-0.25', 'ablation_linear_no-norm-pix',
                 'ablation_finetune_10pct_decoder-depth-1'):
        assert name in runs, name
    # Every accuracy is measured on the smoke test set (200 images): a whole number of correct
    # predictions out of 200 (mmpretrain's Accuracy is float32: k / 200 in percent is exact).
    assert record['sizes'] == SMOKE.__dict__
    test_size = SMOKE.test
    for run in record['runs']:
        assert run['iters'] == 2
        if run['kind'] == 'pretrain':
            assert osp.isfile(run['checkpoint']) and math.isfinite(run['loss_last'])
            assert run['top1'] is None
        else:
            correct = round(run['top1'] * test_size / 100)
            assert 0 <= correct <= test_size, run
            assert run['top1'] == pytest.approx(100.0 * correct / test_size, abs=1e-4), run
    # The raw-pixel baseline recomputed here: the same classifier (sklearn, C=0.1, 20 lbfgs
    # iterations in the smoke run) fitted on the probe's 256 training images and its predictions
    # counted on the 200 smoke test images and on the full 10k test split.
    expected = logistic_regression_correct(SMOKE.probe, SMOKE.test, max_iter=20)
    baseline = record['logistic_regression']
    assert baseline['top1'] == pytest.approx(100.0 * expected['test'] / SMOKE.test, abs=1e-9)
    assert baseline['top1_full_test'] == pytest.approx(100.0 * expected['full_test'] / 10000,
                                                       abs=1e-9)
    page = (out / 'small_scale.md').read_text()
    assert 'SMOKE RUN' in page and '--smoke' in page and 'Status: complete' in page
    for png in ('finetune', 'linear_probe', 'mask_ratio', 'decoder_normpix', 'recon'):
        with Image.open(out / f'small_scale_{png}.png') as img:
            assert img.format == 'PNG' and min(img.size) > 100


def test_pretrain_cost_factor_recomputed():
    assert plan.pretrain_cost_factor(0.75, 4) == pytest.approx(1.0)
    # 4 encoder blocks on 1 + 64 - 48 tokens at width 64, 4 decoder blocks on 65 at width 32.
    default = 4 * 17 * 64**2 + 4 * 65 * 32**2
    assert plan.pretrain_cost_factor(0.25, 1) == pytest.approx(
        (4 * 49 * 64**2 + 1 * 65 * 32**2) / default)
    assert plan.pretrain_cost_factor(0.9, 4) < 1.0 < plan.pretrain_cost_factor(0.5, 4)


def _costs(seconds_per_iter=1.0):
    return plan.CostModel(seconds_per_iter=dict.fromkeys(set(plan.SPEED_OF.values()),
                                                         seconds_per_iter),
                          eval_seconds=0.0, overhead_seconds=0.0)


def test_plan_phase_shrinks_when_time_is_short():
    runs = [plan.PhaseRun('ft', 'finetune_full')] * 2
    later = [plan.PhaseRun('probe', 'linear')]
    planned = sum(plan.RUN_SHARES[r.role] for r in runs + later) * 1000
    on_time = plan.plan_phase(runs, later, 1000, planned, _costs())
    assert on_time.stretch == pytest.approx(1.0)
    assert on_time.iters['finetune_full'] == int(plan.RUN_SHARES['finetune_full'] * 1000)
    late = plan.plan_phase(runs, later, 1000, planned / 2, _costs())
    assert late.stretch == pytest.approx(0.5)
    assert late.iters['finetune_full'] == int(plan.RUN_SHARES['finetune_full'] * 500)
    early = plan.plan_phase(runs, later, 1000, planned * 10, _costs())
    assert early.stretch == plan.MAX_STRETCH
    # A run with a cost factor reserves its share times the factor.
    heavy = plan.plan_phase(runs, [plan.PhaseRun('p', 'linear', factor=3.0)], 1000, planned,
                            _costs())
    assert heavy.stretch == pytest.approx(planned / (planned + 2 * plan.RUN_SHARES['linear']
                                                     * 1000))
    starved = plan.plan_phase(runs, later, 1000, 0.0, _costs())
    assert starved.iters['finetune_full'] == plan.MIN_ITERS


def test_fit_ablations_drops_from_the_end_but_keeps_two():
    variants = ['default', 'a', 'b', 'c']
    factors = dict.fromkeys(variants, 1.0)
    each = 1000 * sum(plan.RUN_SHARES[r] for r in (
        'pretrain_ablation', 'finetune_ablation', 'linear_ablation'))
    fits = plan.MIN_ABLATION_FRACTION * each
    assert plan.fit_ablations(variants, factors, 1000, 4 * fits, _costs()) == variants
    assert plan.fit_ablations(variants, factors, 1000, 3 * fits + 1, _costs()) == variants[:3]
    assert plan.fit_ablations(variants, factors, 1000, 0.0, _costs()) == variants[:2]


def test_schedule_warms_up_then_decays_to_the_end():
    warmup, cosine = schedule(200)
    assert (warmup['begin'], warmup['end']) == (0, 20)
    assert (cosine['begin'], cosine['end'], cosine['T_max']) == (20, 200, 180)
    warmup, cosine = schedule(2)
    assert warmup['end'] == 1 and cosine['end'] == 2


def test_configs_differ_only_where_the_study_says(tmp_path):
    finetune = build_config('finetune', 'f', str(tmp_path), 10, 1, SMOKE, checkpoint='x.pth',
                            labels='10pct')
    scratch = build_config('scratch', 's', str(tmp_path), 10, 1, SMOKE, labels='10pct')
    assert finetune.model.backbone.init_cfg.checkpoint == 'x.pth'
    assert scratch.model.backbone.init_cfg is None
    assert finetune.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.75
    assert scratch.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0
    for cfg in (finetune, scratch):
        assert cfg.randomness.seed == 1 and cfg.train_cfg.max_iters == 10
        assert cfg.train_dataloader.dataset.num_samples == SMOKE.labels_10pct
    full = DataSizes()
    assert build_config('scratch', 's', str(tmp_path), 10, 0, full, labels='10pct'
                        ).train_dataloader.dataset.subset_ratio == 0.1
    probe = build_config('linear', 'l', str(tmp_path), 10, 0, full, checkpoint='x.pth')
    backbone = probe.model.backbone
    assert backbone.frozen_stages == probe.arch.num_layers and backbone.out_type == 'cls_token'
    assert probe.train_dataloader.dataset.num_samples == 10000
    assert probe.val_dataloader.dataset.num_samples == full.test
    pre = build_config('pretrain', 'p', str(tmp_path), 10, 0, full, pretrain_options={
        'model.backbone.mask_ratio': 0.25, 'model.neck.decoder_depth': 1})
    assert pre.model.backbone.mask_ratio == 0.25 and pre.model.neck.decoder_depth == 1
    with pytest.raises(ValueError, match='needs the pretrained checkpoint'):
        build_config('finetune', 'f', str(tmp_path), 10, 0, full)


def test_compare_main_statistics_and_spread_verdict():
    record = dict(runs=[
        dict(name=f'{kind}_all_seed{seed}', top1=value)
        for kind, values in (('finetune', [90.0, 91.0, 92.0]), ('scratch', [85.0, 89.5, 86.0]))
        for seed, value in enumerate(values)] + [
        dict(name='finetune_10pct_seed0', top1=80.0), dict(name='finetune_10pct_seed1', top1=78.0),
        dict(name='scratch_10pct_seed0', top1=79.0), dict(name='scratch_10pct_seed1', top1=77.0)])
    rows = compare_main(record)
    assert rows['all']['mae']['mean'] == pytest.approx(91.0)
    assert rows['all']['scratch']['std'] == pytest.approx(statistics.stdev([85.0, 89.5, 86.0]))
    assert rows['all']['gap'] == pytest.approx(91.0 - (85.0 + 89.5 + 86.0) / 3)
    assert rows['all']['beyond_spread'] is True  # 90 > 89.5
    assert rows['10pct']['beyond_spread'] is False  # 78 < 79: the seeds overlap
    assert spread([3.0])['std'] == 0.0
    one_seed = compare_main(dict(runs=[dict(name='finetune_all_seed0', top1=1.0),
                                       dict(name='scratch_all_seed0', top1=0.0)]))
    assert one_seed['all']['beyond_spread'] is None
