"""tools/benchmarks/gpu_evidence_run.py: its dry run end to end on CPU (the JSON the accelerator
check folds in), its budget planning, the deadline that ends a run, and the JSON of a failed
run."""
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time

import pytest

from ..conftest import REPO_ROOT

BENCHMARKS = osp.join(REPO_ROOT, 'tools', 'benchmarks')
SCRIPT = osp.join(BENCHMARKS, 'gpu_evidence_run.py')
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

import gpu_evidence_run as tool  # noqa: E402
from gpu_evidence_setup import VIT_S  # noqa: E402

KEYS = {'tool', 'command', 'status', 'error', 'dry_run', 'device', 'budget_minutes',
        'wall_seconds', 'environment', 'settings', 'seeds', 'mask_ratios', 'headline_mask_ratio',
        'plan', 'logistic_regression', 'runs', 'linear_probe_curve', 'finetune', 'summary',
        'skipped', 'notes'}


def _run(args, tmp_path, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=env)


def _accuracies(data, key=''):
    """Every number under a key naming an accuracy, anywhere in the record."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _accuracies(v, k if 'accurac' in k else key)
    elif isinstance(data, list):
        for v in data:
            yield from _accuracies(v, key)
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and key:
        yield key, data


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    """The accelerator check's dry-run command line."""
    tmp = tmp_path_factory.mktemp('evidence')
    started = time.time()
    proc = _run(['--device', 'cpu', '--dry-run', '--out', str(tmp / 'out'), '--budget-minutes',
                 '4'], tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp / 'out' / 'evidence.json').read_text())
    return record, tmp / 'out', time.time() - started, proc.stdout


def test_dry_run_writes_the_evidence_json(dry_run):
    record, out, seconds, _ = dry_run
    assert set(record) == KEYS
    assert record['status'] == 'complete' and record['error'] is None
    assert record['dry_run'] and record['device'] == 'cpu'
    assert record['mask_ratios'] == [0.25, 0.5, 0.75, 0.9]
    assert len(record['seeds']) in (1, 2)
    assert not record['skipped']
    # Every run of the protocol: a pretraining and a probe per mask ratio and seed, a
    # fine-tuning of the mask-0.75 pretraining per seed.
    names = {run['name'] for run in record['runs']}
    for seed in record['seeds']:
        for ratio in record['mask_ratios']:
            assert {f'pretrain_mask{ratio}_seed{seed}', f'linear_mask{ratio}_seed{seed}'} <= names
        assert f'finetune_mask0.75_seed{seed}' in names
    for run in record['runs']:
        assert run['iters'] == run['iters_planned'] == tool.DRY_ITERS and not run['truncated']
        assert math.isfinite(run['loss_last'])
        assert (run['accuracy'] is None) == (run['kind'] == 'pretrain')
    # Accuracies are fractions, measured on the dry run's 200 test images (k / 200).
    found = list(_accuracies(record))
    assert len(found) >= 2 * len(record['runs']) // 2, found
    for key, value in found:
        assert 0.0 <= value <= 1.0, (key, value)
    for run in record['runs']:
        if run['accuracy'] is not None:
            assert round(run['accuracy'] * 200) == pytest.approx(run['accuracy'] * 200, abs=1e-6)
    curve = record['linear_probe_curve']
    assert [point['mask_ratio'] for point in curve] == record['mask_ratios']
    for point in curve:
        assert point['seeds'] == record['seeds'] and len(point['accuracies']) == len(point['seeds'])
        assert point['mean'] == pytest.approx(sum(point['accuracies']) / len(point['seeds']))
    assert record['finetune']['seeds'] == record['seeds']
    baseline = record['logistic_regression']
    assert 0.0 < baseline['accuracy'] <= 1.0 and baseline['reference_accuracy'] == 0.836
    summary = record['summary']
    assert summary['baseline_accuracy'] == baseline['accuracy']
    assert summary['linear_probe_accuracy_mean'] == curve[2]['mean']  # mask 0.75
    assert summary['finetune_clears_baseline'] == (summary['finetune_accuracy_mean'] >
                                                   baseline['accuracy'])
    assert record['plan']['pretrain_iters'] >= tool.MIN_ITERS
    assert record['plan']['calibration']['pretrain_seconds_per_iter'] > 0
    page = (out / 'evidence.md').read_text()
    assert 'DRY RUN' in page and 'Linear probe vs. mask ratio' in page
    assert sorted(os.listdir(out)) == ['evidence.json', 'evidence.md']
    assert seconds < 240, seconds  # about a minute on an idle 2-core machine


def test_dry_run_removes_its_temporary_work_dir(dry_run):
    """Checkpoints and Runner logs go to a temporary folder, not to --out (which the accelerator
    check brings back), and are removed at the end."""
    first_line = dry_run[3].splitlines()[0]
    work_dir = first_line.split('work dir ')[-1].strip()
    assert osp.basename(work_dir).startswith('mae_mm_evidence_'), first_line
    assert not osp.exists(work_dir)


def test_failure_still_writes_the_json(tmp_path):
    proc = _run(['--device', 'cpu', '--dry-run', '--out', str(tmp_path / 'out'), '--data-root',
                 str(tmp_path / 'nowhere')], tmp_path)
    assert proc.returncode != 0
    record = json.loads((tmp_path / 'out' / 'evidence.json').read_text())
    assert set(record) == KEYS
    assert record['status'] == 'failed'
    assert 'Fashion-MNIST' in record['error'] and 'nowhere' in record['error']
    assert (tmp_path / 'out' / 'evidence.md').is_file()


def _gpu_run(tmp_path, budget_minutes=4.0):
    args = tool.parse_args(['--device', 'cuda', '--out', str(tmp_path / 'out'), '--work-dir',
                            str(tmp_path / 'work'), '--budget-minutes', str(budget_minutes)])
    return tool.EvidenceRun(args, [])


@pytest.mark.parametrize('per_iter', [0.005, 0.02, 0.1])
def test_gpu_plan_fits_the_budget(tmp_path, per_iter):
    """The planned pretrainings and probes, with their fixed costs, take at most the time left
    after the calibration, and leave the fine-tunings their share; all 8 pretrainings alike."""
    run = _gpu_run(tmp_path)
    assert run.settings.seeds == [0, 1] and run.settings.arch == VIT_S
    calibration = dict(pretrain_seconds_per_iter=per_iter, overhead_seconds_per_run=2.0)
    left = run.seconds_left()
    plan = run.plan(calibration)
    est = plan['estimates']
    factors = sum(run.cost_factor(r) for r in tool.MASK_RATIOS) * 2
    pretrain = plan['pretrain_iters'] * per_iter * factors
    probes = plan['linear_iters'] * est['linear_seconds_per_iter'] * 8
    assert pretrain + probes + est['fixed_seconds'] <= left
    fine_tuning_left = left - pretrain - probes - est['fixed_seconds']
    assert fine_tuning_left >= 0.25 * est['compute_seconds']
    # A faster GPU gets more iterations, within the 50-epoch guard.
    assert plan['pretrain_iters'] <= 50 * 60000 // 512
    assert run.cost_factor(0.75) == pytest.approx(1.0)
    assert run.cost_factor(0.25) > run.cost_factor(0.5) > 1 > run.cost_factor(0.9)


def test_the_budget_counts_from_the_run_not_from_the_import(tmp_path, monkeypatch):
    """A run built long after the module was imported (as in a long test session) still has its
    whole budget; only the script's own start time counts its imports."""
    monkeypatch.setattr(tool, 'STARTED', time.time() - 3600)
    run = _gpu_run(tmp_path, 4.0)
    assert 4 * 60 - 20 < run.seconds_left() + run.reserve <= 4 * 60
    started = time.time() - 30
    late = tool.EvidenceRun(run.args, [], started=started)
    assert late.deadline == pytest.approx(started + 4 * 60)


def test_gpu_plan_scales_with_the_budget(tmp_path):
    calibration = dict(pretrain_seconds_per_iter=0.02, overhead_seconds_per_run=2.0)
    short = _gpu_run(tmp_path, 4.0).plan(calibration)['pretrain_iters']
    longer = _gpu_run(tmp_path, 8.0).plan(calibration)['pretrain_iters']
    assert longer > 2 * short


def test_deadline_ends_a_run_and_keeps_its_checkpoint(tmp_path):
    """A pretraining planned for 1000 iterations whose deadline has passed stops after the
    minimum, saves the checkpoint of its last iteration and says how far it got."""
    args = tool.parse_args(['--device', 'cpu', '--dry-run', '--out', str(tmp_path / 'out'),
                            '--work-dir', str(tmp_path / 'work')])
    run = tool.EvidenceRun(args, [])
    run.deadline = time.time()  # the budget is spent
    run.args.dry_run = False  # no cap at DRY_ITERS: the deadline alone stops it
    entry, hook = run.run('pretrain', 'late', 1000, 0, 0.75)
    assert entry['truncated'] and hook.stopped_at == tool.MIN_ITERS == entry['iters']
    assert entry['iters_planned'] == 1000
    assert entry['checkpoint'].endswith(f'iter_{tool.MIN_ITERS}.pth')
    assert osp.isfile(entry['checkpoint'])


def test_stopped_from_outside_still_writes_the_json(tmp_path):
    """The accelerator check's time box ends the run with SIGTERM: the JSON says so."""
    import signal
    out = tmp_path / 'out'
    proc = subprocess.Popen([sys.executable, SCRIPT, '--device', 'cpu', '--dry-run', '--out',
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='1'))
    for line in proc.stdout:  # wait until it trains
        if 'calibration' in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    record = json.loads((out / 'evidence.json').read_text())
    assert record['status'] == 'failed' and 'stopped from outside' in record['error']
