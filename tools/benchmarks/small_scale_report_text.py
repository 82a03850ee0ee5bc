"""The Markdown of the small-scale study's results page (verdicts computed from the numbers)."""
import datetime
from typing import Callable, Dict, List, Optional

BAR_10K = 83.4  # raw-pixel logistic regression, 10k labels (shared/reference/datasets.md §6)


def _setup(record: dict) -> List[str]:
    sizes, phases = record['sizes'], record.get('phases', {})
    main = phases.get('main', {}).get('iters', {})
    pre = phases.get('pretrain', {}).get('iters', {}).get('pretrain_main')
    ablation = phases.get('ablation_pretrain', {}).get('iters', {}).get('pretrain_ablation')
    ablation_ft = phases.get('ablation', {}).get('iters', {})

    def epochs(iters, batch, images):
        return '' if iters is None else f' (~{iters * batch / images:.2f} epochs)'
    pre_images = sizes['pretrain'] or 60000
    test_set = ('the full 10k test split' if sizes['test'] is None else
                f'{sizes["test"]} test images (a fixed stratified draw, the same for every run)')
    lines = [
        '## Setup', '',
        '- Data: Fashion-MNIST from the Debian package `dataset-fashion-mnist` (60k train / 10k '
        'test, 28x28 gray, 10 classes), read by `mae_mm.FashionMNIST`, upsampled to 32x32 by '
        '`mmpretrain.Resize` (bicubic), gray replicated to 3 channels. Grayscale clothing '
        'silhouettes, not natural images.',
        '- Model: `MaskedViT`, 4 blocks, width 64, 4 heads, MLP 256, patch 4 (8x8 = 64 patches). '
        'MAE decoder: width 32, 4 blocks (1 in the ablation), norm-pix loss (off in the '
        'ablation), mask ratio 0.75 (swept).',
        f'- Pretraining: {pre} iterations of batch 128{epochs(pre, 128, pre_images)} on the '
        'training images without labels, AdamW lr 1e-3, betas (0.9, 0.95), wd 0.05, warm-up 10% '
        '+ cosine, RandomResizedCrop(0.2-1) + flip. One pretraining (seed 0), shared by all '
        'fine-tuning seeds and by the probes of sections 1-2.',
        f'- Ablations (sections 3-4): every variant, the default one included, pretrained '
        f'alike for {ablation} iterations{epochs(ablation, 128, pre_images)} (seed 0; shorter '
        f'than the main pretraining, which the budget allows once), then fine-tuned with 10% '
        f'labels for {ablation_ft.get("finetune_ablation")} iterations and probed for '
        f'{ablation_ft.get("linear_ablation")} iterations.',
        f'- Fine-tuning / from scratch: `mmpretrain.ImageClassifier`, average-pooled patch '
        'tokens + fc_norm, linear head, label smoothing 0.1, drop path 0.1, AdamW lr 1e-3, wd '
        '0.05, batch 64, warm-up 10% + cosine, flip. MAE runs use layer-wise lr decay 0.75; the '
        'from-scratch runs use the same config with random init and no layer decay (rate 1.0). '
        f'All labels: {main.get("finetune_full")} iterations'
        f'{epochs(main.get("finetune_full"), 64, sizes["labels_all"] or 60000)}; 10% labels '
        f'(a fixed stratified 6k draw): {main.get("finetune_10pct")} iterations'
        f'{epochs(main.get("finetune_10pct"), 64, sizes["labels_10pct"] or 6000)}.',
        f'- Linear probe: frozen encoder, cls token after the final norm, BatchNorm without '
        f'affine + linear layer, SGD lr 0.1 momentum 0.9, batch 128, {main.get("linear")} '
        f'iterations on {sizes["probe"]} labelled images'
        f'{epochs(main.get("linear"), 128, sizes["probe"])}. Logistic regression: sklearn '
        f'`LogisticRegression(C=0.1, max_iter=200)` on the same {sizes["probe"]} images.',
        f'- Test: {test_set}, '
        'top-1 from `mmpretrain.Accuracy`, evaluated once after training.',
        f'- Seeds: fine-tuning / scratch seeds {record["seeds"]}; ablations: seed 0, 10% labels.',
        f'- Iterations come from the time budget: planned from a speed measurement at the start '
        f'and re-planned before each phase from the time left '
        f'(`tools/benchmarks/small_scale_plan.py`). Phases: `{phases}`.',
    ]
    return lines + ['']


def _main_section(main: Dict[str, dict], fmt: Callable) -> List[str]:
    lines = ['## 1. MAE pretraining + fine-tuning vs. training from scratch', '',
             '| labels | MAE + fine-tune: mean ± std (min-max) | from scratch: mean ± std '
             '(min-max) | gap | gap beyond seed spread? | seeds (MAE / scratch) |',
             '|---|---|---|---|---|---|']
    for labels, row in main.items():
        a, b = row['mae'], row['scratch']
        lines.append(
            f'| {"all" if labels == "all" else "10%"} | {a["mean"]:.2f} ± '
            f'{a["std"]:.2f} ({a["min"]:.2f}-{a["max"]:.2f}) | {b["mean"]:.2f} ± {b["std"]:.2f} '
            f'({b["min"]:.2f}-{b["max"]:.2f}) | {row["gap"]:+.2f} | '
            f'{ {True: "yes", False: "no", None: "n/a (1 seed)"}[row["beyond_spread"]]} | '
            f'{", ".join(fmt(v) for v in row["mae_seeds"])} / '
            f'{", ".join(fmt(v) for v in row["scratch_seeds"])} |')
    if not main:
        return lines + ['', 'Not run.', '']
    verdicts = []
    for labels, row in main.items():
        name = 'all labels' if labels == 'all' else '10% labels'
        if row['beyond_spread'] is None:
            verdicts.append(f'With {name}: gap {row["gap"]:+.2f} points from a single seed, '
                            'which has no spread to compare with.')
        elif row['beyond_spread']:
            verdicts.append(f'With {name}, MAE + fine-tuning beats training from scratch by '
                            f'{row["gap"]:.2f} points, beyond the seed spread (every MAE seed '
                            'is above every scratch seed): agrees with the paper.')
        elif row['gap'] > 0:
            verdicts.append(f'With {name}, MAE + fine-tuning is ahead by {row["gap"]:.2f} '
                            'points on average, but the seeds overlap: not a clear win.')
        else:
            verdicts.append(f'With {name}, MAE + fine-tuning does not beat training from '
                            f'scratch (gap {row["gap"]:+.2f}): disagrees with the paper.')
    same = all(row['gap'] > 0 for row in main.values())
    verdicts.append(
        'The paper (ImageNet-1k, ViT-L): 85.9 after MAE pretraining vs. 82.5 from scratch with '
        'its improved from-scratch recipe, +3.4 points. The direction is '
        f'{"the same" if same else "not the same"} here; the size of the gap is not comparable '
        '(other data, a 4-block ViT, and equal short schedules for both arms instead of a tuned '
        'long one for the scratch baseline).')
    paragraphs = [line for verdict in verdicts for line in ('', verdict)]
    return lines + paragraphs + ['', '![fine-tune](small_scale_finetune.png)', '']


def _caveats(record: dict, main: Dict[str, dict], runs: Dict[str, dict]) -> List[str]:
    """What the numbers can and cannot say at this scale, from the numbers themselves."""
    logreg = (record.get('logistic_regression') or {}).get('top1')
    nets = [r['top1'] for r in runs.values() if r.get('top1') is not None]
    lines = ['## How far these numbers carry', '']
    if logreg is not None and nets and max(nets) < logreg:
        lines.append(
            f'- Every network in this study (best: {max(nets):.2f}%) is below raw-pixel logistic '
            f'regression ({logreg:.2f}%). The budget allows a fraction of an epoch of '
            'fine-tuning with all labels and about two with 10% labels (see Setup); the training '
            'losses are far above their floor (first and last tenth of each run in "All runs"): '
            'every network is far from converged. What the study measures is which '
            'initialisation gives the better network after the same short schedule, not the '
            'accuracy either would reach.')
    phases = record.get('phases', {})
    main_iters = phases.get('pretrain', {}).get('iters', {}).get('pretrain_main')
    short = phases.get('ablation_pretrain', {}).get('iters', {}).get('pretrain_ablation')
    length = (f'{short / main_iters:.2f} times as long as the main one' if main_iters and short
              else 'shorter than the main one')
    lines += [
        '- The from-scratch arm runs without layer-wise lr decay, i.e. with the full learning '
        'rate in every block; the MAE arm damps its lower blocks (decay 0.75). In a short '
        'schedule that favours the scratch arm, not the MAE one.',
        '- One pretraining (seed 0) serves all fine-tuning seeds, so the spread in section 1 is '
        'the fine-tuning spread only; the pretraining\'s own seed-to-seed variation is not '
        'measured.',
        f'- The ablations (sections 3-4) use one seed and pretrainings {length}; differences '
        'below the seed spread of section 1 are noise.',
        '- The machine was shared (2 cores, other jobs running): the iteration counts above are '
        'what the budget bought at the speed measured during the run, not a design choice.', '']
    return lines


def _probe_section(record: dict, runs: Dict[str, dict], fmt: Callable) -> List[str]:
    logreg = record.get('logistic_regression') or {}
    mae = runs.get('linear_default', {}).get('top1')
    rand = runs.get('linear_random_init', {}).get('top1')
    lines = ['## 2. Linear probe', '',
             '| features | test top-1 |', '|---|---|',
             f'| MAE encoder (frozen, cls token) | {fmt(mae)} |',
             f'| same encoder, random init (frozen) | {fmt(rand)} |',
             f'| logistic regression on raw pixels (this run) | {fmt(logreg.get("top1"))} '
             f'(full 10k test: {fmt(logreg.get("top1_full_test"))}) |',
             f'| logistic regression, reference bar (10k labels) | {BAR_10K} |', '']
    if mae is not None and rand is not None:
        lines.append(f'MAE features vs. random-init features: {mae - rand:+.2f} points. ' + (
            'MAE pretraining made the frozen features more linearly separable.' if mae > rand
            else 'Pretraining did not improve the frozen features over random ones.'))
    if mae is not None and logreg.get('top1') is not None:
        lines.append(
            f'MAE probe vs. raw-pixel logistic regression: {mae - logreg["top1"]:+.2f} points; '
            f'vs. the {BAR_10K}% bar: {mae - BAR_10K:+.2f}. ' +
            ('The probe clears the raw-pixel bar.' if mae > max(BAR_10K, logreg['top1']) else
             'The probe does not clear the raw-pixel bar: here the frozen cls token of this '
             'small, briefly pretrained encoder is a weaker linear feature than the pixels '
             'themselves (the paper, too, finds MAE features strong but not very linearly '
             'separable: Sec. 4.3, Fig. 9).'))
    lines.append('The paper\'s ViT-L probe reaches 75.8% on ImageNet-1k vs. 85.9% fine-tuned: MAE '
                 'is a fine-tuning pretraining first, a linear-feature learner second.')
    return lines + ['', '![linear probe](small_scale_linear_probe.png)', '']


def _ablation_verdicts(rows: Dict[str, dict]) -> List[str]:
    """One line per paper finding: what was measured here, and whether it agrees."""
    lines = []
    sweep = {v: rows[v] for v in ('mask-0.25', 'mask-0.5', 'default', 'mask-0.9') if v in rows}
    if len(sweep) > 1:
        ratio = {'mask-0.25': '25%', 'mask-0.5': '50%', 'default': '75%', 'mask-0.9': '90%'}
        best = {key: max(sweep, key=lambda v: sweep[v][key]) for key in ('finetune', 'linear')}
        agree = {key: 'agrees' if best[key] == 'default' else 'disagrees' for key in best}
        lines.append(f'\n- Mask ratio: best fine-tune at {ratio[best["finetune"]]} '
                     f'({agree["finetune"]} with the paper\'s 75%), best linear probe at '
                     f'{ratio[best["linear"]]} ({agree["linear"]}).')
    if 'default' in rows and 'decoder-depth-1' in rows:
        ft, lin = (rows['default'][k] - rows['decoder-depth-1'][k] for k in ('finetune', 'linear'))
        lines.append(f'- Decoder depth 4 minus depth 1: fine-tune {ft:+.2f}, linear {lin:+.2f} '
                     'points (paper: +0.1 / +6.4, depth matters for the probe): '
                     f'{"agrees" if lin > 0 else "disagrees"} on the probe.')
    if 'default' in rows and 'no-norm-pix' in rows:
        ft, lin = (rows['default'][k] - rows['no-norm-pix'][k] for k in ('finetune', 'linear'))
        lines.append(f'- Norm-pix on minus off: fine-tune {ft:+.2f}, linear {lin:+.2f} points '
                     '(paper: +0.5 / +0.4): '
                     f'{"agrees" if ft > 0 and lin > 0 else "disagrees"}.')
    return lines


def _ablation_section(rows: Dict[str, dict], record: dict, runs: Dict[str, dict],
                      fmt: Callable) -> List[str]:
    lines = ['## 3-4. Mask ratio, decoder depth, norm-pix', '',
             'Fine-tuning with 10% labels (seed 0) and linear probe (10k labels) of each '
             'pretraining; all these pretrainings (the default one included) have the same, '
             'short, schedule (see Setup).', '',
             '| pretraining | fine-tune top-1 | linear top-1 | final pretraining loss |',
             '|---|---|---|---|']
    order = ['mask-0.25', 'mask-0.5', 'default', 'mask-0.9', 'decoder-depth-1', 'no-norm-pix']
    names = {'default': 'default: mask 0.75, decoder depth 4, norm-pix'}
    for variant in [v for v in order if v in rows]:
        row = rows[variant]
        lines.append(f'| {names.get(variant, variant)} | {fmt(row["finetune"])} | '
                     f'{fmt(row["linear"])} | {fmt(row["loss"]) if row["loss"] else "n/a"} |')
    if record.get('dropped'):
        why = 'in the smoke run' if record['smoke'] else 'for lack of time'
        lines.append(f'\nNot run {why}: {", ".join(record["dropped"])}.')
    lines.append('\nThe losses of norm-pix and plain-pixel models are in different units, and '
                 'the mask ratio changes what is predicted, so the losses compare only within '
                 'a row. The paper (ViT-L, 800 epochs) finds a high ratio (~75%) good for both '
                 'fine-tuning and probing, the probe degrading much more at low ratios than '
                 'fine-tuning (Fig. 5); decoder depth 1 vs. 4: 84.8 / 65.5 vs. 84.9 / 71.9 '
                 '(fine-tune / linear, Table 1a), i.e. depth matters for the probe only; '
                 'norm-pix: 85.4 / 73.9 vs. 84.9 / 73.5 without (Table 1d). A single seed per '
                 'cell here: differences smaller than the seed spread of section 1 are not '
                 'findings.')
    scratch = [r['top1'] for n, r in runs.items() if n.startswith('scratch_10pct_seed')]
    fine_tunes = [row['finetune'] for row in rows.values() if row['finetune'] is not None]
    if scratch and fine_tunes:
        below = sum(value < min(scratch) for value in fine_tunes)
        iters = record.get('phases', {}).get('main', {}).get('iters', {}).get('finetune_10pct')
        lines.append(
            f'\nFor reference, training from scratch with 10% labels for {iters} iterations gave '
            f'{min(scratch):.2f}-{max(scratch):.2f} (section 1); {below} of the '
            f'{len(fine_tunes)} fine-tunes above are below that range.' + (
                ' Where the short pretraining leaves the fine-tuned network below the scratch '
                'one, it has not yet helped fine-tuning (plausibly: its weights moved little from '
                'their random start, while layer decay slows its lower blocks), so the fine-tune '
                'column says little about which pretraining setting is better.'
                if below else ''))
    lines += _ablation_verdicts(rows)
    best = {key: max((v for v in rows if rows[v][key] is not None),
                     key=lambda v: rows[v][key], default=None)
            for key in ('finetune', 'linear')}
    if rows:
        lines.append(f'\nMeasured best: fine-tune {best["finetune"]}, linear {best["linear"]}.')
    lines += ['', '![mask ratio](small_scale_mask_ratio.png)', '',
              '![decoder depth and norm-pix](small_scale_decoder_normpix.png)', '']
    return lines


def render_page(record: dict, plots: dict, main: Dict[str, dict], rows: Dict[str, dict],
                runs: Dict[str, dict], fmt: Callable) -> str:
    """The whole results page."""
    wall = record.get('wall_seconds', 0.0)
    status = ('complete' if record.get('finished') else
              'PARTIAL: the study was still running or stopped before its end')
    lines = ['# Small-scale MAE study on Fashion-MNIST (CPU)', '',
             f'Status: {status}. Written {datetime.datetime.now():%Y-%m-%d %H:%M}.',
             'SMOKE RUN: a check that every step runs, not a measurement.' if record['smoke']
             else '',
             '', 'Command:', '', f'    {record["command"]}', '',
             f'Wall time: {wall / 60:.1f} min (budget {record["budget_minutes"]} min, '
             f'{record["threads"]} torch thread(s) on a shared 2-core machine). '
             'Log: `small_scale.log`, every number: `small_scale.json`.', '']
    lines += [f'Note: {note}' for note in record.get('notes', [])]
    lines += _setup(record)
    lines += _main_section(main, fmt)
    lines += _probe_section(record, runs, fmt)
    lines += _ablation_section(rows, record, runs, fmt)
    lines += _caveats(record, main, runs)
    lines += ['## 5. Reconstructions', '',
              'Test images, mask ratio 0.75, default model (norm-pix: the reconstruction is '
              'de-normalised with the hidden patches\' true mean/std, as in the paper\'s '
              'figures).',
              '', '![reconstructions](small_scale_recon.png)', '',
              '## Pretraining losses', '', '| run | iterations | loss, first 10% -> last 10% |',
              '|---|---|---|']
    for run in record['runs']:
        if run['kind'] == 'pretrain':
            lines.append(f'| {run["name"]} | {run["iters"]} | {fmt(run["loss_first"])} -> '
                         f'{fmt(run["loss_last"])} |')
    lines += ['', '## All runs', '',
              '| run | kind | iterations | seconds | training loss, first -> last tenth | top-1 |',
              '|---|---|---|---|---|---|']
    for run in record['runs']:
        lines.append(f'| {run["name"]} | {run["kind"]} | {run["iters"]} | '
                     f'{run["train_seconds"]:.0f} | {fmt(run["loss_first"])} -> '
                     f'{fmt(run["loss_last"])} | {fmt(run["top1"])} |')
    return '\n'.join(lines) + '\n'
