"""Helpers of ``accelerator_check.py``: the environment probe, the carried-wheel install, time-boxed
subprocesses, the pytest result parser and the markdown report; and what its steps' scripts
(``gpu_pretrain_run.py``, ``gpu_evidence_run.py``) share with it: ``nvidia_smi``, the file
writers ``write_atomic`` / ``write_json`` and ``percent``.

Standard library only: this module runs before the carried mmengine / mmpretrain wheels are
installed, with whatever Python the machine has.
"""
import glob
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
OPENMMLAB = ('mmengine', 'mmcv', 'mmpretrain')

# Run by the chosen Python, with the PYTHONPATH the steps get; prints one JSON line.
PROBE = r'''
import importlib, importlib.util, json, os, platform, sys, warnings
warnings.filterwarnings('ignore')
info = dict(python=sys.version.split()[0], executable=sys.executable,
            platform=platform.platform(), cpu_count=os.cpu_count())
for name in ('torch', 'torchvision', 'numpy', 'transformers', 'timm', 'cv2', 'PIL',
             'mmengine', 'mmcv', 'mmpretrain', 'pycocotools', 'skimage'):
    try:
        module = importlib.import_module(name)
        info[name] = getattr(module, '__version__', 'present')
    except Exception as err:
        info[name] = None
        info[name + '_error'] = f'{type(err).__name__}: {err}'[:300]
info['pkg_resources'] = importlib.util.find_spec('pkg_resources') is not None
try:
    import torch
    info['cuda_available'] = torch.cuda.is_available()
    info['torch_cuda'] = torch.version.cuda
    info['cudnn'] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
                    gpu_multiprocessors=props.multi_processor_count,
                    bf16_supported=torch.cuda.is_bf16_supported())
except Exception as err:
    info['torch_error'] = f'{type(err).__name__}: {err}'[:300]
if info.get('mmpretrain'):
    try:
        from mmpretrain.utils.dependency import WITH_MULTIMODAL
        info['mmpretrain_multimodal'] = WITH_MULTIMODAL
        from mmpretrain.models import MAE  # noqa: F401  (what benchmark.py compares with)
        info['mmpretrain_mae'] = True
    except Exception as err:
        info['mmpretrain_mae'] = False
        info['mmpretrain_mae_error'] = f'{type(err).__name__}: {err}'[:300]
try:
    import mae_mm, mae_mm.engine, mae_mm.models  # noqa: F401,E401
    from mae_mm.datasets.transforms import crop_decode
    info['mae_mm'] = mae_mm.__version__
    info['mae_mm_file'] = mae_mm.__file__
    info['crop_decode_extension'] = crop_decode.available()
except Exception as err:
    info['mae_mm'] = None
    info['mae_mm_error'] = f'{type(err).__name__}: {err}'[:300]
print(json.dumps(info))
'''


def child_env(site_dir: Optional[str] = None, extra: Optional[Dict[str, str]] = None) -> dict:
    """The steps' environment: mae-mm from this checkout (PYTHONPATH = repo root), then the
    carried packages' folder, then whatever PYTHONPATH held."""
    env = dict(os.environ)
    paths = [REPO_ROOT] + ([site_dir] if site_dir else [])
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED='1', MPLBACKEND='Agg',
               PYTHONWARNINGS=env.get('PYTHONWARNINGS', 'ignore::SyntaxWarning'))
    env.update(extra or {})
    return env


def probe_environment(python: str, env: dict, timeout: float = 120) -> dict:
    try:
        out = subprocess.run([python, '-c', PROBE], env=env, cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(probe_error=f'the environment probe took over {timeout:.0f} s')
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return dict(probe_error=(out.stdout + out.stderr)[-1500:])


def nvidia_smi() -> dict:
    """GPU name, driver and memory as nvidia-smi reports them ({} where it is absent)."""
    if not shutil.which('nvidia-smi'):
        return {}
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                              '--format=csv,noheader'], capture_output=True, text=True,
                             timeout=30)
    except (subprocess.TimeoutExpired, OSError) as err:
        return dict(nvidia_smi_error=str(err))
    rows = [[c.strip() for c in line.split(',')] for line in out.stdout.strip().splitlines()]
    if out.returncode or not rows or len(rows[0]) < 3:
        return dict(nvidia_smi_error=(out.stdout + out.stderr).strip()[-300:])
    return dict(nvidia_smi_gpu=rows[0][0], driver=rows[0][1], nvidia_smi_memory=rows[0][2],
                nvidia_smi_gpus=len(rows))


def carried_wheels(carry: str, need_setuptools: bool) -> List[str]:
    """The carried wheels to install: all but setuptools, which only where pkg_resources is
    missing (it would shadow the machine's own setuptools)."""
    wheels = sorted(glob.glob(osp.join(carry, 'wheels', '*.whl')))
    return [w for w in wheels
            if need_setuptools or not osp.basename(w).lower().startswith('setuptools-')]


def install_wheels(python: str, wheels: List[str], site_dir: str, log_path: str,
                   timeout: float = 180) -> Optional[str]:
    """``pip install --no-index --no-deps --target site_dir wheels``; None, or why it failed."""
    marker = osp.join(site_dir, '.accelerator_check_wheels')
    names = '\n'.join(osp.basename(w) for w in wheels)
    if osp.isfile(marker) and open(marker).read() == names:
        return None  # installed by an earlier run
    shutil.rmtree(site_dir, ignore_errors=True)
    cmd = [python, '-m', 'pip', 'install', '--no-index', '--no-deps', '--no-compile',
           '--disable-pip-version-check', '--target', site_dir, *wheels]
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env['PIP_CONSTRAINT'] = '/dev/null'  # a machine-wide constraint must not veto the pins
    with open(log_path, 'w') as log:
        log.write(' '.join(cmd) + '\n')
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return f'pip install --target took over {timeout:.0f} s'
    if proc.returncode:
        return f'pip install --target exited {proc.returncode} (see {log_path})'
    with open(marker, 'w') as f:
        f.write(names)
    return None


def run_timeboxed(cmd: List[str], log_path: str, timeout: float, env: dict) -> dict:
    """Run ``cmd`` in its own process group, output to ``log_path``; on timeout the whole group
    (data loader workers, compile workers...) is killed. Returns status, returncode, seconds."""
    start = time.perf_counter()
    with open(log_path, 'w') as log:
        log.write('$ ' + ' '.join(cmd) + '\n')
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO_ROOT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=max(1.0, timeout))
            status = 'ok' if returncode == 0 else 'failed'
        except BaseException as err:  # the time box, or this process being stopped
            _kill_group(proc)
            if not isinstance(err, subprocess.TimeoutExpired):
                raise
            returncode, status = None, 'timeout'
    return dict(status=status, returncode=returncode, seconds=time.perf_counter() - start,
                timeout_s=round(timeout, 1), log=log_path)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(path: str, chars: int = 1500) -> str:
    try:
        with open(path, errors='replace') as f:
            return f.read()[-chars:]
    except OSError:
        return ''


def parse_junit(path: str) -> Optional[dict]:
    """Counts of a pytest --junitxml file, and the skip reasons with their counts."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = dict(tests=0, passed=0, failed=0, errors=0, skipped=0)
    reasons: Dict[str, int] = {}
    failures = []
    for case in root.iter('testcase'):
        counts['tests'] += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find('skipped') is not None:
            counts['skipped'] += 1
            message = case.find('skipped').get('message', '') or 'skipped'
            reasons[message] = reasons.get(message, 0) + 1
        elif case.find('failure') is not None:
            counts['failed'] += 1
            failures.append(name)
        elif case.find('error') is not None:
            counts['errors'] += 1
            failures.append(name)
        else:
            counts['passed'] += 1
    return dict(counts, skip_reasons=reasons, failing=failures[:50])


def flatten_numbers(data, prefix: str = '') -> Dict[str, float]:
    """``{'a.b.c': number}`` of every number in nested dicts / lists."""
    out: Dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten_numbers(value, f'{prefix}.{key}' if prefix else str(key)))
    elif isinstance(data, list) and len(data) <= 64:
        for i, value in enumerate(data):
            out.update(flatten_numbers(value, f'{prefix}[{i}]'))
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        out[prefix] = data
    return out


def evidence_accuracies(evidence: dict) -> Dict[str, object]:
    """The figures of ``gpu_evidence_run.py``'s evidence.json that the table shows: the
    raw-pixel baseline, the fine-tuning and the linear-probe curve (means over seeds); any
    number under a key naming an accuracy where that layout is absent."""
    summary = evidence.get('summary')
    if not isinstance(summary, dict) or not summary:
        found = {k: v for k, v in flatten_numbers(evidence).items()
                 if any(w in k.lower() for w in ('acc', 'top1', 'top-1'))}
        return dict(list(found.items())[:40])
    figures: Dict[str, object] = {
        'logistic regression on raw pixels': summary.get('baseline_accuracy'),
        'logistic regression, reference': summary.get('reference_accuracy')}
    finetune = evidence.get('finetune') or {}
    figures[f"MAE + fine-tuning, mask {finetune.get('mask_ratio')}, mean of seeds "
            f"{finetune.get('seeds')}"] = summary.get('finetune_accuracy_mean')
    for point in evidence.get('linear_probe_curve') or []:
        figures[f"linear probe, mask {point.get('mask_ratio')}, mean of seeds "
                f"{point.get('seeds')}"] = point.get('mean')
    figures['fine-tuning clears the baseline'] = summary.get('finetune_clears_baseline')
    figures['linear probe (mask 0.75) clears the baseline'] = \
        summary.get('linear_probe_clears_baseline')
    return figures


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so that readers never see half."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, data, indent: int = 2) -> None:
    """``data`` as indented JSON: to ``path`` (atomically), or to stdout where ``path`` is '-'."""
    text = json.dumps(data, indent=indent)
    if path == '-':
        print(text)
    else:
        write_atomic(path, text + '\n')


# ----------------------------------------------------------------------------- markdown
def percent(value, digits: int = 1, missing: str = '') -> str:
    """A fraction as a percentage with ``digits`` decimals (0.1234 -> '12.3%'); ``missing``
    where it is None."""
    return missing if value is None else f'{value:.{digits}%}'


def _num(value, fmt: str = '{:.1f}') -> str:
    return '' if value is None else fmt.format(value)


def _table_row(*cells: Optional[str]) -> str:
    """A markdown table row of ``cells``; a None cell is left blank ('| |')."""
    return '|' + '|'.join(' ' if cell is None else f' {cell} ' for cell in cells) + '|'


def markdown(report: dict) -> str:
    env = report.get('environment', {})
    title = 'Accelerator check' + (' (dry run, CPU)' if report.get('dry_run') else '')
    gpu = env.get('gpu_name') or env.get('nvidia_smi_gpu') or 'no GPU'
    lines = [
        f'# {title}', '',
        f"- date: {report.get('date')} ({report.get('status')}, "
        f"{report.get('total_seconds', 0):.0f} s of a {report.get('time_budget_s')} s budget)",
        f"- device: {report.get('device')}; GPU: {gpu}; driver: {env.get('driver') or 'n/a'}",
        f"- python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, "
        f"cuDNN {env.get('cudnn')}), transformers {env.get('transformers')}, numpy "
        f"{env.get('numpy')}",
        f"- mmengine {env.get('mmengine')}, mmcv {env.get('mmcv')}, mmpretrain "
        f"{env.get('mmpretrain')} (MAE importable: {env.get('mmpretrain_mae')}), mae-mm "
        f"{env.get('mae_mm')} at commit {report.get('commit') or 'n/a'}; JPEG region decoder "
        f"built: {env.get('crop_decode_extension')}; carried wheels: "
        f"{len(env.get('installed_wheels', []))}",
        '', '| step | status | seconds | time box (s) | note |',
        '| --- | --- | ---: | ---: | --- |']
    for step in report.get('steps', []):
        lines.append(f"| {step['name']} | {step['status']} | {step.get('seconds', 0):.1f} | "
                     f"{_num(step.get('timeout_s'), '{:.0f}')} | "
                     f"{(step.get('reason') or '').replace('|', '/')[:160]} |")
    lines += ['', '| step | configuration | img/s mae-mm | img/s mmpretrain | ratio | MFU mae-mm | '
              'MFU mmpretrain | peak MB mae-mm | peak MB mmpretrain | note |',
              '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
    steps = {s['name']: s for s in report.get('steps', [])}
    for run in steps.get('benchmark', {}).get('figures', {}).get('runs', []):
        mm, ref = run.get('mae_mm') or {}, run.get('mmpretrain') or {}
        note = '' if run['status'] == 'ok' else f"{run['status']}: {run.get('reason', '')}"
        lines.append(_table_row(
            'benchmark', run['label'], _num(mm.get('img_per_s')), _num(ref.get('img_per_s')),
            _num(run.get('ratio'), '{:.2f}x'), percent(mm.get('fraction_of_peak')),
            percent(ref.get('fraction_of_peak')), _num(mm.get('peak_mb'), '{:.0f}'),
            _num(ref.get('peak_mb'), '{:.0f}'), note.replace('|', '/')[:120]))
    pre = steps.get('pretrain', {}).get('figures') or {}
    if pre:
        decoder = {True: 'built', False: 'not built: whole-image decoding'}.get(
            pre.get('crop_decode_extension'), 'n/a')
        configuration = (f"ViT arch {pre.get('arch')}, {pre.get('img_size')} px, batch "
                         f"{pre.get('batch_size')}, {pre.get('measured_iters')} iters after "
                         f"{pre.get('warmup_iters')}, {pre.get('num_workers')} workers, "
                         f"{pre.get('amp_dtype')}")
        note = (f"GPU waits for data {percent(pre.get('data_wait_fraction'))} of the time; JPEG "
                f"region decoder {decoder}; loss {_num(pre.get('first_loss'), '{:.3f}')} -> "
                f"{_num(pre.get('last_loss'), '{:.3f}')}")
        # The columns of the comparison with mmpretrain stay blank: one implementation.
        lines.append(_table_row('pretrain', configuration, _num(pre.get('img_per_s')), None,
                                None, None, None, _num(pre.get('peak_memory_mb'), '{:.0f}'),
                                None, note))
    tests = steps.get('tests', {}).get('figures') or {}
    if tests:
        lines += ['', f"Tests (tests/test_cuda): {tests.get('passed', 0)} passed, "
                      f"{tests.get('failed', 0)} failed, {tests.get('errors', 0)} errors, "
                      f"{tests.get('skipped', 0)} skipped"]
        for reason, count in sorted(tests.get('skip_reasons', {}).items()):
            lines.append(f'- skipped {count}x: {reason}')
        for name in tests.get('failing', []):
            lines.append(f'- failing: {name}')
    evidence = steps.get('evidence', {}).get('figures') or {}
    accuracies = evidence.get('accuracies') or {}
    if accuracies:
        lines += ['', '| evidence run: figure | value |', '| --- | ---: |']
        for key, value in accuracies.items():
            text = '' if value is None else \
                percent(value, 2) if isinstance(value, float) and 0 <= value <= 1 else \
                f'{value:.4g}' if isinstance(value, float) else str(value)
            lines.append(f'| {key} | {text} |')
    return '\n'.join(lines) + '\n'


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')

