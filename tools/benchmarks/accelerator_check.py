"""One-command accelerator check (issue 18): run on any CUDA machine, it writes one JSON and one
markdown table of what mae-mm does there. ``accelerator_check.sh`` is the entry point.

Steps, each a time-boxed subprocess whose results are folded into ``OUT/accelerator_check.json``
and ``OUT/accelerator_check.md``, both rewritten after every step (and every benchmark
configuration), so a failed or stopped run leaves its partial results:

0. environment: versions, GPU and driver (nvidia-smi); where mmengine / mmcv / mmpretrain are not
   importable, the carried pure-Python wheels (``.gpu_carry/wheels``, see
   ``collect_gpu_wheels.sh``) are installed with ``pip install --no-index --no-deps --target``
   and put on PYTHONPATH, after this checkout (mae-mm is used from the repository, not installed);
1. tests: ``pytest tests/test_cuda`` (passed / failed / skipped counts, skip reasons);
2. benchmark: ``tools/analysis_tools/benchmark.py``, ViT-B/16 and ViT-L/16 at batch 64 and 128,
   bf16, eager and ``model.compile=True``, side by side with mmpretrain's MAE: img/s, ratio,
   fraction of the measured bf16 matmul peak (MFU), ``max_memory_allocated``;
3. pretrain: ``gpu_pretrain_run.py``, 300 iterations of ViT-B/16 with the real Runner and data
   pipeline on generated JPEGs: img/s and the fraction of time the GPU waits for data;
4. evidence: ``gpu_evidence_run.py --budget-minutes 4`` (MAE on Fashion-MNIST; its
   ``evidence.json`` is folded in).

The steps run in the order tests, pretrain, evidence, benchmark, and the whole run keeps to
``--time-budget`` (default 585 s on a GPU): every step gets at most its own time box, less the
boxes of the steps after it; the benchmark, last, gets the time the others left and runs its
configurations in priority order (``--benchmarks``) until that is spent; the ones it could not
start are listed as skipped (``--steps benchmark`` alone runs all of them, ~7 min).
``--dry-run`` runs everything on CPU at tiny sizes (CI), writing the same JSON keys.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import signal
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from accelerator_check_lib import (OPENMMLAB, REPO_ROOT, carried_wheels, child_env,  # noqa: E402
                                   evidence_accuracies, git_commit, install_wheels, log_tail,
                                   markdown, nvidia_smi, parse_junit, probe_environment,
                                   run_timeboxed, write_atomic, write_json)

# In the order they run: the benchmark last, so that it gets whatever time the others leave
# (it runs its configurations in priority order until its time is up).
STEPS = ('tests', 'pretrain', 'evidence', 'benchmark')
# Time boxes (s) of the steps on a GPU and in the dry run.
# The benchmark, last, takes whatever the budget has left (at least 585 - 495 = 90 s on a GPU);
# its box only caps it. The evidence run's box is its 4-minute budget plus start-up and the
# final evaluations.
TIME_BOXES = dict(gpu=dict(tests=120, benchmark=585, pretrain=90, evidence=285),
                  dry=dict(tests=180, benchmark=300, pretrain=150, evidence=300))
BUDGETS = dict(gpu=585, dry=1200)
# ARCH:BATCH:eager|compile in priority order: what a cut-short benchmark step leaves out is last.
# Compiled runs skip benchmark.py's memory probes (each would compile again in its own process);
# the eager runs give max_memory_allocated.
GPU_BENCHMARKS = 'b:64:eager,b:128:eager,b:128:compile,l:64:eager,l:128:eager,l:128:compile,' \
                 'b:64:compile,l:64:compile'
DRY_BENCHMARKS = 'smoke:2:eager,smoke:2:compile'
RUN_BOXES = dict(gpu={False: 75, True: 150}, dry={False: 150, True: 200})
# A configuration is started only with this much of the benchmark's time left (s).
MIN_START = dict(gpu={False: 40, True: 90}, dry={False: 10, True: 10})
ARCH_NAMES = dict(b='ViT-B/16', l='ViT-L/16', h='ViT-H/14', s='ViT-S/16', t='ViT-T/16',
                  smoke='tiny ViT (2 layers, 64 wide), 32 px, patch 8')


class Stopped(Exception):
    """SIGTERM / SIGINT: the run is being stopped from outside."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dry-run', action='store_true',
                        help='everything on CPU at tiny sizes (checks the script, times nothing)')
    parser.add_argument('--out', help='folder of accelerator_check.json / .md (default: a new '
                        'work_dirs/accelerator_check/<UTC time>)')
    parser.add_argument('--work-dir', help="steps' logs and outputs (default: OUT/work); "
                        'outside OUT, OUT/logs.tar.gz gets a copy of the logs after each step')
    parser.add_argument('--carry', default=osp.join(REPO_ROOT, '.gpu_carry'),
                        help='carried wheels (CARRY/wheels) and data (CARRY/data)')
    parser.add_argument('--site-dir', default=osp.join(tempfile.gettempdir(),
                                                       'mae_mm_accelerator_check_site'),
                        help='where carried wheels are installed (pip --target)')
    parser.add_argument('--steps', default=','.join(STEPS),
                        help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument('--time-budget', type=float, help='seconds for the whole run '
                        f"(default {BUDGETS['gpu']}; dry run {BUDGETS['dry']})")
    parser.add_argument('--timeout', action='append', default=[], metavar='STEP=SECONDS',
                        help='time box of one step (repeatable)')
    parser.add_argument('--evidence-minutes', type=float, default=4.0,
                        help="gpu_evidence_run.py's --budget-minutes")
    parser.add_argument('--benchmarks', metavar='ARCH:BATCH:MODE,...',
                        help='benchmark.py runs, in order; MODE eager or compile, ARCH smoke for '
                        f'its tiny model (default: {GPU_BENCHMARKS}; dry run: {DRY_BENCHMARKS})')
    parser.add_argument('--fail-step', action='append', default=[], metavar='STEP',
                        help='testing hook: replace STEP by a command that fails')
    args = parser.parse_args(argv)
    chosen = {s.strip() for s in args.steps.split(',') if s.strip()}
    if chosen - set(STEPS):
        parser.error(f'unknown step(s) {sorted(chosen - set(STEPS))}: choose from {STEPS}')
    args.steps = [s for s in STEPS if s in chosen]  # always in this order
    mode = 'dry' if args.dry_run else 'gpu'
    args.time_boxes = dict(TIME_BOXES[mode])
    for item in args.timeout:
        step, _, seconds = item.partition('=')
        if step not in STEPS or not seconds:
            parser.error(f'--timeout {item!r}: use STEP=SECONDS with STEP in {STEPS}')
        args.time_boxes[step] = float(seconds)
    args.time_budget = args.time_budget or BUDGETS[mode]
    args.benchmarks = _parse_benchmarks(parser, args.benchmarks or (
        DRY_BENCHMARKS if args.dry_run else GPU_BENCHMARKS))
    if not args.out:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d_%H%M%S')
        args.out = osp.join(REPO_ROOT, 'work_dirs', 'accelerator_check', stamp)
    args.out = osp.abspath(args.out)
    args.work_dir = osp.abspath(args.work_dir or osp.join(args.out, 'work'))
    return args


def _parse_benchmarks(parser: argparse.ArgumentParser, spec: str) -> List[tuple]:
    runs = []
    for item in spec.split(','):
        parts = item.strip().split(':')
        if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in ('eager', 'compile'):
            parser.error(f'--benchmarks {item!r}: use ARCH:BATCH:eager or ARCH:BATCH:compile')
        runs.append((parts[0], int(parts[1]), parts[2] == 'compile'))
    return runs


class Check:
    """The run's state; ``save()`` rewrites the JSON and the markdown."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.start = time.perf_counter()
        self.deadline = self.start + args.time_budget
        self.device = 'cpu' if args.dry_run else 'cuda'
        self.python = sys.executable
        self.env: dict = {}
        self.site_dir: Optional[str] = None
        self.report = dict(
            schema='mae-mm accelerator check 1', status='running', dry_run=args.dry_run,
            device=self.device,
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            command=['tools/benchmarks/accelerator_check.sh', *sys.argv[1:]],
            commit=git_commit(), time_budget_s=args.time_budget, out=args.out,
            work_dir=args.work_dir, environment={}, steps=[])

    def path(self, name: str) -> str:
        return osp.join(self.args.work_dir, name)

    def save(self) -> None:
        self.report['total_seconds'] = round(time.perf_counter() - self.start, 1)
        write_json(osp.join(self.args.out, 'accelerator_check.json'), self.report)
        write_atomic(osp.join(self.args.out, 'accelerator_check.md'), markdown(self.report))
        if not self.args.work_dir.startswith(self.args.out + os.sep):
            self._tar_logs()

    def _tar_logs(self) -> None:
        import tarfile
        target = osp.join(self.args.out, 'logs.tar.gz')
        with tarfile.open(target + '.tmp', 'w:gz') as tar:
            for name in sorted(os.listdir(self.args.work_dir)):
                path = osp.join(self.args.work_dir, name)
                if osp.isfile(path) and osp.getsize(path) < 8 * 2**20:
                    tar.add(path, arcname=name)
        os.replace(target + '.tmp', target)

    def remaining_for(self, step: str, later: List[str]) -> float:
        """This step's time box: its own, less what the later steps' boxes need (the benchmark,
        which takes what is left, holds nothing back)."""
        reserve = sum(self.args.time_boxes[s] for s in later if s != 'benchmark')
        return min(self.args.time_boxes[step], self.deadline - time.perf_counter() - reserve)

    def env_vars(self) -> dict:
        extra = {}
        if self.args.dry_run:
            extra['OMP_NUM_THREADS'] = os.environ.get('OMP_NUM_THREADS', '1')
            extra['CUDA_VISIBLE_DEVICES'] = os.environ.get('CUDA_VISIBLE_DEVICES', '')
        return child_env(self.site_dir, extra)

    def command(self, step: str, cmd: List[str]) -> List[str]:
        if step in self.args.fail_step:
            return [self.python, '-c', f'import sys; sys.exit("forced failure of {step} '
                    '(--fail-step)")']
        return cmd

    # ------------------------------------------------------------------------- steps
    def environment(self) -> dict:
        step = dict(name='environment', status='running', seconds=0.0)
        start = time.perf_counter()
        info = probe_environment(self.python, self.env_vars())
        missing = [m for m in OPENMMLAB if not info.get(m)]
        installed: List[str] = []
        if missing:
            wheels = carried_wheels(self.args.carry, need_setuptools=not info.get('pkg_resources'))
            if not wheels:
                step['reason'] = (f"{', '.join(missing)} not importable and no wheels in "
                                  f"{self.args.carry}/wheels (collect_gpu_wheels.sh)")
            else:
                error = install_wheels(self.python, wheels, self.args.site_dir,
                                       self.path('install_wheels.log'))
                if error:
                    step['reason'] = error
                else:
                    self.site_dir = self.args.site_dir
                    installed = [osp.basename(w) for w in wheels]
                    info = probe_environment(self.python, self.env_vars())
        info.update(nvidia_smi(), installed_wheels=installed, site_dir=self.site_dir)
        self.env = info
        self.report['environment'] = info
        problems = [m for m in ('torch', *OPENMMLAB, 'mae_mm') if not info.get(m)]
        if problems:
            step['reason'] = step.get('reason') or '; '.join(
                f"{m}: {info.get(m + '_error', 'missing')}" for m in problems)
        elif not info.get('mmpretrain_mae'):
            problems.append('mmpretrain_mae')
            step['reason'] = f"mmpretrain's MAE: {info.get('mmpretrain_mae_error')}"
        elif self.device == 'cuda' and not info.get('cuda_available'):
            problems.append('cuda')
            step['reason'] = 'no CUDA device visible to torch: run with --dry-run on CPU'
        step.update(status='failed' if problems else 'ok',
                    seconds=round(time.perf_counter() - start, 1))
        return step

    def tests(self, timeout: float) -> dict:
        junit = self.path('tests_junit.xml')
        cmd = self.command('tests', [self.python, '-m', 'pytest', 'tests/test_cuda', '-q', '-rs',
                                     '-p', 'no:cacheprovider', f'--junitxml={junit}'])
        step = dict(name='tests', command=cmd, **run_timeboxed(cmd, self.path('tests.log'),
                                                               timeout, self.env_vars()))
        counts = parse_junit(junit) if step['status'] != 'timeout' else None
        step['figures'] = counts or {}
        if counts and counts['tests'] == 0:
            step.update(status='failed', reason='no test collected in tests/test_cuda')
        elif counts:
            reasons = counts['skip_reasons']
            step['reason'] = (f"{counts['passed']} passed, {counts['failed']} failed, "
                              f"{counts['errors']} errors, {counts['skipped']} skipped")
            no_cuda = sum(n for r, n in reasons.items() if 'cuda' in r.lower())
            if no_cuda:
                step['reason'] += f' (skipped: no CUDA: {no_cuda})'
        elif step['status'] != 'ok':
            step['reason'] = self._why(step)
        return step

    def benchmark(self, timeout: float, on_run) -> dict:
        mode = 'dry' if self.args.dry_run else 'gpu'
        plan = self.args.benchmarks
        step = dict(name='benchmark', status='running', timeout_s=round(timeout, 1),
                    figures=dict(runs=[]))
        start = time.perf_counter()
        for arch, batch, compiled in plan:
            label = (f"{ARCH_NAMES.get(arch, arch)}, batch {batch}, bf16, "
                     f"{'compile' if compiled else 'eager'}")
            run = dict(label=label, arch=arch, batch_size=batch, dtype='bf16', compile=compiled)
            left = timeout - (time.perf_counter() - start)
            if left < min(MIN_START[mode][compiled], timeout):
                run.update(status='skipped', reason='not started: the time left for the '
                           f'benchmark ({max(0, left):.0f} s) was too short')
            else:
                name = f"benchmark_{arch}_bs{batch}_{'compile' if compiled else 'eager'}"
                out_json = self.path(name + '.json')
                cmd = [self.python, 'tools/analysis_tools/benchmark.py', '--dtype', 'bf16',
                       '--device', self.device, '--json', out_json]
                cmd += (['--smoke'] if arch == 'smoke' else
                        ['--arch', arch, '--batch-size', str(batch), '--steps', '10',
                         '--warmup', '2'])
                cmd += ['--compile', '--no-memory'] if compiled else []
                cmd = self.command('benchmark', cmd)
                box = RUN_BOXES[mode][compiled]
                run.update(command=cmd, **run_timeboxed(cmd, self.path(name + '.log'),
                                                        min(left, box), self.env_vars()))
                if run['status'] == 'timeout' and left < box:  # the step's end, not its own
                    run.update(status='cut', reason=f'stopped at the end of the time left for '
                               f'the benchmark ({left:.0f} s)')
                else:
                    self._fold_benchmark(run, out_json)
            step['figures']['runs'].append(run)
            step['seconds'] = round(time.perf_counter() - start, 1)
            on_run(step)
        runs = step['figures']['runs']
        done = [r for r in runs if r['status'] == 'ok']
        statuses = {r['status'] for r in runs}
        # Configurations left out for time are listed, not failures: the benchmark only gets
        # what the other steps leave (--steps benchmark runs them all).
        step['status'] = ('failed' if 'failed' in statuses or not done else
                          'timeout' if 'timeout' in statuses else 'ok')
        step['reason'] = f'{len(done)} of {len(runs)} configurations ran' + ''.join(
            f"; {r['label']}: {r['status']}" for r in runs if r['status'] != 'ok')
        return step

    def _fold_benchmark(self, run: dict, out_json: str) -> None:
        if run['status'] != 'ok':
            run['reason'] = self._why(run)
            return
        try:
            with open(out_json) as f:
                raw = json.load(f)
        except (OSError, ValueError) as err:
            run.update(status='failed', reason=f'no JSON from benchmark.py: {err}')
            return
        keys = ('img_per_s', 'fraction_of_peak', 'peak_mb', 'gflops_per_image',
                'achieved_gflops', 'median_step_s', 'saved_mb')
        for impl in ('mae_mm', 'mmpretrain'):
            figures = raw.get('impls', {}).get(impl, {})
            run[impl] = {k: figures.get(k) for k in keys}
        run.update(ratio=raw.get('speedup'), matmul_peak_gflops=raw.get('matmul_peak_gflops'),
                   img_size=raw.get('img_size'), patch_size=raw.get('patch_size'), raw=raw)

    def pretrain(self, timeout: float) -> dict:
        out_json = self.path('pretrain.json')
        cmd = [self.python, 'tools/benchmarks/gpu_pretrain_run.py', '--json', out_json]
        cmd += ['--dry-run', '--device', 'cpu'] if self.args.dry_run else ['--device', 'cuda']
        cmd = self.command('pretrain', cmd)
        step = dict(name='pretrain', command=cmd, **run_timeboxed(
            cmd, self.path('pretrain.log'), timeout, self.env_vars()))
        step['figures'] = self._read_json(step, out_json)
        if step['status'] == 'ok' and step['figures']:
            f = step['figures']
            step['reason'] = (f"{f['img_per_s']:.1f} img/s; GPU waits for data "
                              f"{f['data_wait_fraction']:.1%} of the time")
        return step

    def evidence(self, timeout: float) -> dict:
        out_dir = self.path('evidence')
        step = dict(name='evidence', figures={})
        minutes = self.args.evidence_minutes
        if not self.args.dry_run:  # what the time box leaves, less a minute for the rest
            minutes = max(0.5, min(minutes, (timeout - 45) / 60))
        cmd = [self.python, 'tools/benchmarks/gpu_evidence_run.py', '--out', out_dir,
               '--budget-minutes', f'{minutes:g}']
        fmnist = osp.join(self.args.carry, 'data', 'fashion-mnist')
        cmd += ['--data-root', fmnist] if osp.isdir(fmnist) else []
        cmd += ['--dry-run', '--device', 'cpu'] if self.args.dry_run else ['--device', 'cuda']
        cmd = self.command('evidence', cmd)
        step.update(command=cmd, **run_timeboxed(cmd, self.path('evidence.log'), timeout,
                                                  self.env_vars()))
        evidence = self._read_json(step, osp.join(out_dir, 'evidence.json'))
        if evidence:
            step['figures'] = dict(evidence=evidence, accuracies=evidence_accuracies(evidence))
            summary = evidence.get('summary') or {}
            step['reason'] = (f"evidence run {evidence.get('status')}; fine-tuning clears the "
                              f"baseline: {summary.get('finetune_clears_baseline')}, linear probe:"
                              f" {summary.get('linear_probe_clears_baseline')}")
        return step

    def _read_json(self, step: dict, path: str) -> dict:
        if step['status'] != 'ok':
            step['reason'] = self._why(step)
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError) as err:
            if step['status'] == 'ok':
                step.update(status='failed', reason=f'no result JSON ({path}): {err}')
            return {}

    @staticmethod
    def _why(step: dict) -> str:
        if step['status'] == 'timeout':
            return f"stopped at its time box ({step.get('timeout_s')} s)"
        tail = [line for line in log_tail(step['log'], 3000).splitlines() if line.strip()]
        errors = [line for line in tail if 'Error' in line or 'error:' in line
                  or 'forced failure' in line or 'FAILED' in line]
        return f"exit {step.get('returncode')}: " + (errors[-1] if errors else
                                                     (tail[-1] if tail else ''))[-300:]


def _on_signal(signum, frame):
    raise Stopped(signal.Signals(signum).name)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    check = Check(args)
    print(f'[accelerator check] results: {args.out}/accelerator_check.{{json,md}}', flush=True)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    steps: List[Dict] = check.report['steps']
    try:
        steps.append(dict(name='environment', status='running'))
        steps[-1] = check.environment()
        check.save()
        print(f"[accelerator check] environment: {steps[-1]['status']} "
              f"{steps[-1].get('reason', '')}", flush=True)
        no_device = check.device == 'cuda' and not check.env.get('cuda_available')
        for i, name in enumerate(args.steps):
            timeout = check.remaining_for(name, args.steps[i + 1:])
            if no_device or timeout < min(10, args.time_boxes[name]):
                steps.append(dict(name=name, status='skipped', seconds=0.0, reason=(
                    'no CUDA device' if no_device else 'no time left in the budget')))
                check.save()
                continue
            steps.append(dict(name=name, status='running', timeout_s=round(timeout, 1)))
            check.save()

            def update(partial, index=len(steps) - 1):
                steps[index] = partial
                check.save()

            step = (check.benchmark(timeout, update) if name == 'benchmark' else
                    getattr(check, name)(timeout))
            step['seconds'] = round(step.get('seconds', 0.0), 1)
            steps[-1] = step
            check.save()
            print(f"[accelerator check] {name}: {step['status']} ({step['seconds']:.0f} s) "
                  f"{step.get('reason', '')}", flush=True)
        failed = [s['name'] for s in steps if s['status'] not in ('ok',)]
        check.report['status'] = 'ok' if not failed else 'failed: ' + ', '.join(failed)
    except Stopped as stop:
        if steps and steps[-1].get('status') == 'running':
            steps[-1].update(status='interrupted', reason=f'the check got {stop}')
        check.report['status'] = f'interrupted ({stop})'
    check.save()
    print(f"[accelerator check] {check.report['status']} in {check.report['total_seconds']:.0f} s:"
          f" {args.out}/accelerator_check.md", flush=True)
    return 0 if check.report['status'] == 'ok' else 1


if __name__ == '__main__':
    sys.exit(main())
