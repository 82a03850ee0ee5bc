"""The results page and plots of the small-scale study, written from its JSON record.

The verdicts ("agrees with the paper" or not) are computed from the measured numbers; nothing
here knows what the numbers should be. The study writes the page as it goes; to render it again
from a finished run's record (same numbers, e.g. after a change of wording)::

    python tools/benchmarks/small_scale_report.py docs/results/small_scale.json
"""
import json
import os.path as osp
import sys
import statistics
from typing import Dict, List, Optional

MASK_RATIOS = {'mask-0.25': 0.25, 'mask-0.5': 0.5, 'default': 0.75, 'mask-0.9': 0.9}


def _runs(record: dict) -> Dict[str, dict]:
    return {run['name']: run for run in record['runs']}


def spread(values: List[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max."""
    return dict(mean=statistics.fmean(values), n=len(values),
                std=statistics.stdev(values) if len(values) > 1 else 0.0,
                min=min(values), max=max(values))


def compare_main(record: dict) -> Dict[str, dict]:
    """MAE+fine-tune vs scratch per label setting: the seeds, their spread, the gap, and
    whether the gap exceeds the seed spread (every MAE seed above every scratch seed; None
    with a single seed, which has no spread)."""
    runs, rows = _runs(record), {}
    for labels in ('all', '10pct'):
        mae = [r['top1'] for n, r in runs.items() if n.startswith(f'finetune_{labels}_seed')]
        scratch = [r['top1'] for n, r in runs.items() if n.startswith(f'scratch_{labels}_seed')]
        if not mae or not scratch:
            continue
        a, b = spread(mae), spread(scratch)
        rows[labels] = dict(mae=a, scratch=b, mae_seeds=mae, scratch_seeds=scratch,
                            gap=a['mean'] - b['mean'],
                            beyond_spread=(a['min'] > b['max']) if min(a['n'], b['n']) > 1
                            else None)
    return rows


def _top1(runs: Dict[str, dict], name: Optional[str]) -> Optional[float]:
    return runs[name]['top1'] if name in runs else None


def ablation_rows(record: dict) -> Dict[str, dict]:
    """variant -> fine-tune (10% labels) and linear top-1 and the pretraining's final loss."""
    runs, rows = _runs(record), {}
    for variant, names in record.get('ablation_runs', {}).items():
        pre = runs.get(f'pretrain_ablation_{variant}')
        rows[variant] = dict(finetune=_top1(runs, names['finetune']),
                             linear=_top1(runs, names['linear']),
                             loss=pre['loss_last'] if pre else None)
    return rows


def _plot(path: str, draw) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    draw(ax)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return osp.basename(path)


def write_plots(record: dict, out_dir: str) -> Dict[str, str]:
    """PNG plots of every experiment that has results; returns name -> file."""
    plots, main = {}, compare_main(record)
    if main:
        def draw_main(ax):
            for i, (labels, row) in enumerate(main.items()):
                for j, (key, color) in enumerate((('mae', 'tab:blue'), ('scratch', 'tab:gray'))):
                    x = i + (j - 0.5) * 0.35
                    ax.bar(x, row[key]['mean'], 0.33, color=color,
                           label=('MAE + fine-tune' if key == 'mae' else 'from scratch')
                           if i == 0 else None)
                    ax.plot([x] * len(row[f'{key}_seeds']), row[f'{key}_seeds'], 'k.')
            ax.set_xticks(range(len(main)), [f'{k} labels'.replace('10pct', '10%')
                                             for k in main])
            low = min(min(r['mae']['min'], r['scratch']['min']) for r in main.values())
            ax.set_ylim(max(0, low - 5), 100)
            ax.set_ylabel('test top-1 (%)')
            ax.set_title('Fine-tuning: MAE pretrained vs from scratch (dots: seeds)')
            ax.legend(fontsize=8)
        plots['main'] = _plot(osp.join(out_dir, 'small_scale_finetune.png'), draw_main)
    runs, logreg = _runs(record), record.get('logistic_regression')
    probes = [(label, _top1(runs, name)) for label, name in
              (('MAE encoder', 'linear_default'), ('random-init encoder', 'linear_random_init'))]
    probes = [(label, v) for label, v in probes if v is not None]
    if probes:
        def draw_probe(ax):
            labels = [p[0] for p in probes] + (['logistic regression\n(raw pixels)']
                                               if logreg else [])
            values = [p[1] for p in probes] + ([logreg['top1']] if logreg else [])
            ax.bar(range(len(values)), values, color=['tab:blue', 'tab:gray', 'tab:orange'][
                :len(values)])
            ax.axhline(83.4, color='tab:red', ls='--', lw=1, label='83.4% bar (10k labels)')
            ax.set_xticks(range(len(values)), labels, fontsize=8)
            ax.set_ylabel('test top-1 (%)')
            ax.set_title('Linear probe, 10k labels')
            ax.legend(fontsize=8)
        plots['probe'] = _plot(osp.join(out_dir, 'small_scale_linear_probe.png'), draw_probe)
    rows = ablation_rows(record)
    sweep = sorted((MASK_RATIOS[v], rows[v]) for v in rows if v in MASK_RATIOS)
    if len(sweep) > 1:
        def draw_sweep(ax):
            ratios = [100 * r for r, _ in sweep]
            ax.plot(ratios, [row['finetune'] for _, row in sweep], 'o-',
                    label='fine-tune (10% labels)')
            ax.plot(ratios, [row['linear'] for _, row in sweep], 's-', label='linear probe')
            ax.set_xlabel('mask ratio (%)')
            ax.set_ylabel('test top-1 (%)')
            ax.set_title('Mask ratio (cf. paper Fig. 5)')
            ax.legend(fontsize=8)
        plots['mask_sweep'] = _plot(osp.join(out_dir, 'small_scale_mask_ratio.png'), draw_sweep)
    others = [v for v in ('default', 'decoder-depth-1', 'no-norm-pix') if v in rows]
    if len(others) > 1:
        def draw_ablation(ax):
            for j, key in enumerate(('finetune', 'linear')):
                ax.bar([i + (j - 0.5) * 0.35 for i in range(len(others))],
                       [rows[v][key] for v in others], 0.33,
                       label='fine-tune (10% labels)' if key == 'finetune' else 'linear probe')
            names = {'default': 'default\n(depth 4, norm-pix)', 'decoder-depth-1':
                     'decoder depth 1', 'no-norm-pix': 'no norm-pix'}
            ax.set_xticks(range(len(others)), [names[v] for v in others], fontsize=8)
            ax.set_ylabel('test top-1 (%)')
            ax.set_title('Decoder depth and norm-pix (cf. Table 1a/1d)')
            ax.legend(fontsize=8)
        plots['ablation'] = _plot(osp.join(out_dir, 'small_scale_decoder_normpix.png'),
                                  draw_ablation)
    return plots


def _fmt(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


def write_report(record: dict, out_dir: str) -> str:
    """Write ``small_scale.md`` (and the plots) into ``out_dir``; returns its path."""
    from small_scale_report_text import render_page
    plots = write_plots(record, out_dir)
    text = render_page(record, plots, compare_main(record), ablation_rows(record), _runs(record),
                       _fmt)
    path = osp.join(out_dir, 'small_scale.md')
    with open(path, 'w') as f:
        f.write(text)
    return path


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: small_scale_report.py <out>/small_scale.json')
    with open(sys.argv[1]) as f:
        print(write_report(json.load(f), osp.dirname(osp.abspath(sys.argv[1]))))
