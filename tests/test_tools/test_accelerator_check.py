"""tools/benchmarks/accelerator_check.sh: its dry run end to end (a fast selection of steps), a
run where one step is forced to fail and another outlasts its time box (the other steps' results
and the JSON survive), the carried-wheel install (pip --target) with a fake wheel, the time box
killing a step's whole process group, and the report's parsers. CI also runs the whole dry run
(.ci/run, stage "accelerator check: dry run")."""
import json
import os
import os.path as osp
import subprocess
import sys
import time
import zipfile

import pytest

from ..conftest import REPO_ROOT

TOOLS = osp.join(REPO_ROOT, 'tools', 'benchmarks')
sys.path.insert(0, TOOLS)
import accelerator_check_lib as lib  # noqa: E402

STEP_KEYS = {'name', 'status', 'seconds'}
ENV_KEYS = {'python', 'torch', 'torch_cuda', 'cuda_available', 'mmengine', 'mmcv', 'mmpretrain',
            'mmpretrain_mae', 'mae_mm', 'installed_wheels', 'transformers', 'numpy'}
IMPL_KEYS = {'img_per_s', 'fraction_of_peak', 'peak_mb', 'gflops_per_image'}


def _check(out, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PYTHONPATH', None)
    proc = subprocess.run(
        ['bash', osp.join(TOOLS, 'accelerator_check.sh'), '--dry-run', '--out', str(out), *args],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    report = json.loads((out / 'accelerator_check.json').read_text())
    return proc, report, (out / 'accelerator_check.md').read_text()


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    """The dry run of the benchmark (eager tiny model) and pretraining steps."""
    out = tmp_path_factory.mktemp('accelerator_check')
    start = time.time()
    proc, report, md = _check(out, '--steps', 'benchmark,pretrain', '--benchmarks',
                              'smoke:2:eager')
    return dict(proc=proc, report=report, md=md, seconds=time.time() - start, out=out)


def test_dry_run_succeeds_with_the_same_keys_as_a_gpu_run(dry_run):
    proc, report = dry_run['proc'], dry_run['report']
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report['status'] == 'ok' and report['dry_run'] is True and report['device'] == 'cpu'
    assert {'date', 'commit', 'command', 'time_budget_s', 'total_seconds'} <= set(report)
    assert ENV_KEYS <= set(report['environment'])
    assert report['environment']['mmpretrain_mae'] is True
    assert [s['name'] for s in report['steps']] == ['environment', 'pretrain', 'benchmark']
    for step in report['steps']:
        assert STEP_KEYS <= set(step) and step['status'] == 'ok', step
    steps = {s['name']: s for s in report['steps']}
    bench = steps['benchmark']['figures']['runs']
    assert len(bench) == 1 and bench[0]['status'] == 'ok' and bench[0]['compile'] is False
    for impl in ('mae_mm', 'mmpretrain'):
        assert IMPL_KEYS <= set(bench[0][impl])
        assert bench[0][impl]['img_per_s'] > 0 and bench[0][impl]['peak_mb'] > 0
    assert bench[0]['ratio'] == pytest.approx(bench[0]['mae_mm']['img_per_s'] /
                                              bench[0]['mmpretrain']['img_per_s'])
    pre = steps['pretrain']['figures']
    assert pre['measured_iters'] == 5 and pre['num_workers'] == 2 and pre['img_per_s'] > 0
    assert 0 <= pre['data_wait_fraction'] < 1
    assert osp.isfile(steps['pretrain']['log']) and osp.isfile(bench[0]['log'])


def test_dry_run_markdown_has_a_row_per_figure(dry_run):
    md = dry_run['md']
    assert md.startswith('# Accelerator check (dry run, CPU)')
    assert '| benchmark | tiny ViT' in md and 'eager |' in md
    assert '| pretrain |' in md and 'GPU waits for data' in md


def test_failed_and_timed_out_steps_keep_the_other_results(tmp_path):
    """tests runs (skipped without CUDA), benchmark is forced to fail, pretrain outlasts a 3 s
    time box: the JSON holds all three, the exit status says the check failed."""
    proc, report, md = _check(tmp_path, '--steps', 'tests,benchmark,pretrain', '--fail-step',
                              'benchmark', '--timeout', 'pretrain=3')
    assert proc.returncode == 1
    steps = {s['name']: s for s in report['steps']}
    assert report['status'] == 'failed: pretrain, benchmark'
    tests = steps['tests']
    assert tests['status'] == 'ok', tests
    counts = tests['figures']
    assert counts['tests'] > 0 and counts['failed'] == counts['errors'] == 0
    if not report['environment'].get('cuda_available'):
        assert counts['skipped'] == counts['tests'] and 'skipped: no CUDA' in tests['reason']
    assert steps['benchmark']['status'] == 'failed'
    assert 'forced failure of benchmark' in steps['benchmark']['figures']['runs'][0]['reason']
    assert steps['pretrain']['status'] == 'timeout' and steps['pretrain']['timeout_s'] == 3
    assert 'skipped' in md and '| pretrain | timeout |' in md


def _fake_wheel(folder, name='mae_mm_fake_pkg', version='0.1'):
    dist = f'{name}-{version}.dist-info'
    path = osp.join(folder, f'{name}-{version}-py3-none-any.whl')
    files = {f'{name}/__init__.py': 'VALUE = 42\n',
             f'{dist}/METADATA': f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n',
             f'{dist}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n'
                              'Tag: py3-none-any\n'}
    files[f'{dist}/RECORD'] = ''.join(f'{k},,\n' for k in files) + f'{dist}/RECORD,,\n'
    with zipfile.ZipFile(path, 'w') as zf:
        for key, text in files.items():
            zf.writestr(key, text)
    return path


def test_carried_wheels_install_with_pip_target(tmp_path):
    carry = tmp_path / 'carry'
    (carry / 'wheels').mkdir(parents=True)
    wheel = _fake_wheel(str(carry / 'wheels'))
    (carry / 'wheels' / 'setuptools-81.0.0-py3-none-any.whl').write_bytes(b'')
    assert lib.carried_wheels(str(carry), need_setuptools=False) == [wheel]
    assert len(lib.carried_wheels(str(carry), need_setuptools=True)) == 2
    site = tmp_path / 'site'
    assert lib.install_wheels(sys.executable, [wheel], str(site), str(tmp_path / 'pip.log')) \
        is None
    env = lib.child_env(str(site))
    out = subprocess.run([sys.executable, '-c', 'import mae_mm_fake_pkg, mae_mm; '
                          'print(mae_mm_fake_pkg.VALUE, mae_mm.__file__)'],
                         env=env, capture_output=True, text=True, cwd=str(tmp_path))
    value, mae_mm_file = out.stdout.split()
    assert value == '42' and mae_mm_file.startswith(REPO_ROOT)  # mae-mm from the checkout
    mtime = os.stat(site / 'mae_mm_fake_pkg' / '__init__.py').st_mtime
    assert lib.install_wheels(sys.executable, [wheel], str(site), str(tmp_path / 'pip.log')) \
        is None  # already there: not reinstalled
    assert os.stat(site / 'mae_mm_fake_pkg' / '__init__.py').st_mtime == mtime
    broken = tmp_path / 'broken-0.1-py3-none-any.whl'
    broken.write_bytes(b'not a zip')
    assert 'exited' in lib.install_wheels(sys.executable, [str(broken)], str(tmp_path / 's2'),
                                          str(tmp_path / 'pip2.log'))


def test_time_box_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / 'grandchild.pid'
    code = ('import subprocess, sys, time; p = subprocess.Popen(["sleep", "60"]); '
            f'open({str(pid_file)!r}, "w").write(str(p.pid)); time.sleep(60)')
    result = lib.run_timeboxed([sys.executable, '-c', code], str(tmp_path / 'log'), 2,
                               dict(os.environ))
    assert result['status'] == 'timeout' and result['seconds'] < 15
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail('the step\'s child process outlived its time box')


def test_junit_parser_counts_outcomes_and_skip_reasons(tmp_path):
    xml = tmp_path / 'junit.xml'
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="a" name="t1"/>'
        '<testcase classname="a" name="t2"><skipped message="no CUDA device"/></testcase>'
        '<testcase classname="a" name="t3"><skipped message="no CUDA device"/></testcase>'
        '<testcase classname="b" name="t4"><failure message="boom"/></testcase>'
        '<testcase classname="b" name="t5"><error message="setup"/></testcase>'
        '</testsuite></testsuites>')
    counts = lib.parse_junit(str(xml))
    assert {k: counts[k] for k in ('tests', 'passed', 'failed', 'errors', 'skipped')} == dict(
        tests=5, passed=1, failed=1, errors=1, skipped=2)
    assert counts['skip_reasons'] == {'no CUDA device': 2}
    assert counts['failing'] == ['b::t4', 'b::t5']
    assert lib.parse_junit(str(tmp_path / 'missing.xml')) is None


def test_markdown_of_a_partial_report():
    report = dict(date='2026-12-01', status='running', dry_run=False, device='cuda',
                  time_budget_s=585, total_seconds=12.0,
                  environment=dict(gpu_name='NVIDIA H200', driver='580.1', torch='2.11.0'),
                  steps=[dict(name='environment', status='ok', seconds=3.0),
                         dict(name='benchmark', status='running', seconds=9.0,
                              figures=dict(runs=[dict(
                                  label='ViT-B/16, batch 64, bf16, eager', status='ok',
                                  ratio=1.5, mae_mm=dict(img_per_s=3000.0, fraction_of_peak=0.4,
                                                         peak_mb=9000.0),
                                  mmpretrain=dict(img_per_s=2000.0, fraction_of_peak=0.27,
                                                  peak_mb=12000.0))]))])
    md = lib.markdown(report)
    assert 'NVIDIA H200' in md and '580.1' in md
    assert ('| benchmark | ViT-B/16, batch 64, bf16, eager | 3000.0 | 2000.0 | 1.50x | 40.0% | '
            '27.0% | 9000 | 12000 |') in md
    assert lib.flatten_numbers(dict(a=dict(acc=0.9, n=[1, 2]), ok=True)) == {
        'a.acc': 0.9, 'a.n[0]': 1, 'a.n[1]': 2}


def test_benchmark_runs_its_configurations_until_its_time_is_up(tmp_path, monkeypatch):
    """Without running benchmark.py: each fake run takes 0.3 s; with 0.5 s for the step the
    first runs, the others are listed as skipped (not failures); a run stopped by the step's
    end is 'cut', by its own time box 'timeout' (a failure)."""
    import accelerator_check as check_mod
    args = check_mod.parse_args(['--dry-run', '--out', str(tmp_path), '--benchmarks',
                                 'smoke:2:eager,smoke:2:compile,smoke:2:eager'])
    os.makedirs(args.work_dir)
    monkeypatch.setitem(check_mod.MIN_START['dry'], False, 0.25)
    monkeypatch.setitem(check_mod.MIN_START['dry'], True, 0.25)
    outcome = {}

    def fake_run(cmd, log, timeout, env):
        time.sleep(0.3)
        json_path = cmd[cmd.index('--json') + 1]
        with open(json_path, 'w') as f:
            json.dump(dict(speedup=1.5, impls=dict(mae_mm=dict(img_per_s=3.0),
                                                   mmpretrain=dict(img_per_s=2.0))), f)
        return dict(status=outcome.get('status', 'ok'), returncode=0, seconds=0.3,
                    timeout_s=timeout, log=log)

    monkeypatch.setattr(check_mod, 'run_timeboxed', fake_run)
    saved = []
    check = check_mod.Check(args)
    step = check.benchmark(0.5, lambda partial: saved.append(len(partial['figures']['runs'])))
    assert [r['status'] for r in step['figures']['runs']] == ['ok', 'skipped', 'skipped']
    assert step['status'] == 'ok' and step['reason'].startswith('1 of 3 configurations ran')
    assert step['figures']['runs'][0]['ratio'] == 1.5 and saved == [1, 2, 3]
    outcome['status'] = 'timeout'
    step = check.benchmark(0.5, lambda partial: None)  # 0.5 s left < the run's own box
    assert step['figures']['runs'][0]['status'] == 'cut' and step['status'] == 'failed'
    monkeypatch.setitem(check_mod.RUN_BOXES['dry'], False, 0.4)
    step = check.benchmark(0.5, lambda partial: None)  # the run's own box (0.4 s) ran out
    assert step['figures']['runs'][0]['status'] == 'timeout' and step['status'] == 'failed'


@pytest.mark.parametrize('mode', [[], ['--dry-run']])
def test_every_step_gets_its_box_from_a_fresh_budget(tmp_path, mode):
    """With the shipped boxes and budget, no step is starved at the start: each earlier step gets
    its whole box and the benchmark (last, whatever is left) still at least a minute on a GPU."""
    import accelerator_check as check_mod
    args = check_mod.parse_args([*mode, '--out', str(tmp_path)])
    check = check_mod.Check(args)
    steps = list(check_mod.STEPS)
    assert steps[-1] == 'benchmark'
    for i, step in enumerate(steps[:-1]):
        assert check.remaining_for(step, steps[i + 1:]) >= args.time_boxes[step] - 1, step
    assert check.remaining_for('benchmark', []) >= 60
    assert args.time_budget <= (1200 if mode else 600)  # a GPU run within the 10 minutes
