"""The record of ``gpu_evidence_run.py``: the environment it describes, the summary it derives
from the runs, and its two files, ``evidence.json`` and ``evidence.md``."""
import json
import os
import os.path as osp

from accelerator_check_lib import OPENMMLAB, nvidia_smi, percent, write_atomic, write_json
from gpu_evidence_baseline import REFERENCE_ACCURACY


def environment(device: str) -> dict:
    """Versions of Python, torch, CUDA and OpenMMLab; on CUDA the GPU and driver, and TF32
    matmuls switched on (for the fp32 evaluation).

    Raises:
        RuntimeError: ``device`` is 'cuda' and torch sees no GPU.
    """
    import platform

    import torch
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, cpu_count=os.cpu_count())
    for module in OPENMMLAB:
        try:
            info[module] = __import__(module).__version__
        except Exception as err:  # noqa: BLE001 (reported, not needed)
            info[module] = f'not importable: {err}'
    if device == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError(f'--device cuda: torch {torch.__version__} sees no GPU')
        major, minor = torch.cuda.get_device_capability(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_capability=f'{major}.{minor}',
                    gpu_count=torch.cuda.device_count(), driver=nvidia_smi().get('driver'))
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 evaluation
        torch.backends.cudnn.allow_tf32 = True
    return info


def summarise(record: dict) -> None:
    """Fill ``linear_probe_curve``, ``finetune`` and ``summary`` of ``record`` from its runs:
    the accuracies per seed and their means, and whether the headline ones clear the
    raw-pixel logistic regression."""
    runs, seeds = record['runs'], record['seeds']
    headline = record['headline_mask_ratio']

    def accuracies(kind, ratio):
        found = {r['seed']: r['accuracy'] for r in runs if r['kind'] == kind
                 and r['mask_ratio'] == ratio and r['accuracy'] is not None}
        kept = [seed for seed in seeds if seed in found]
        values = [found[seed] for seed in kept]
        return kept, values, (sum(values) / len(values) if values else None)

    record['linear_probe_curve'] = []
    for ratio in record['mask_ratios']:
        kept, values, mean = accuracies('linear', ratio)
        record['linear_probe_curve'].append(dict(mask_ratio=ratio, seeds=kept,
                                                 accuracies=values, mean=mean))
    kept, values, mean = accuracies('finetune', headline)
    record['finetune'] = dict(mask_ratio=headline, seeds=kept, accuracies=values, mean=mean)
    _, _, probe_mean = accuracies('linear', headline)
    baseline = (record['logistic_regression'] or {}).get('accuracy')

    def clears(value):
        return None if value is None or baseline is None else bool(value > baseline)

    record['summary'] = dict(
        baseline_accuracy=baseline, reference_accuracy=REFERENCE_ACCURACY,
        finetune_accuracy_mean=mean, linear_probe_accuracy_mean=probe_mean,
        finetune_clears_baseline=clears(mean), linear_probe_clears_baseline=clears(probe_mean))


def write_report(record: dict, out: str) -> None:
    """``out/evidence.json`` and ``out/evidence.md``, each replaced whole."""
    os.makedirs(out, exist_ok=True)
    write_json(osp.join(out, 'evidence.json'), record, indent=1)
    write_atomic(osp.join(out, 'evidence.md'), markdown(record) + '\n')


def _pct(value) -> str:
    return percent(value, digits=2, missing='-')


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
