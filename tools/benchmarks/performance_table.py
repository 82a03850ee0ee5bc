"""Run the side-by-side benchmarks of docs/benchmarks.md one after the other and print their
tables (markdown), keeping every run's JSON.

Each row is one run of ``tools/analysis_tools/benchmark.py`` (mae-mm and mmpretrain's MAE
alternating in one process); nothing else should run on the machine meanwhile.

Examples::

    python tools/benchmarks/performance_table.py --out work_dirs/perf        # ~30 min, 2 cores
    python tools/benchmarks/performance_table.py --out /tmp/perf --only headline
    python tools/benchmarks/performance_table.py --out /tmp/perf --smoke     # CI: tiny, seconds
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCHMARK = osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'benchmark.py')

# name -> (group, benchmark.py arguments)
RUNS: Dict[str, tuple] = {
    'fp32': ('headline', ['--dtype', 'fp32', '--steps', '5']),
    'bf16': ('headline', ['--dtype', 'bf16', '--steps', '5']),
    'fp32_compile': ('headline', ['--dtype', 'fp32', '--steps', '5', '--warmup', '2',
                                  '--compile', '--no-memory']),
    'bf16_compile': ('headline', ['--dtype', 'bf16', '--steps', '5', '--warmup', '2',
                                  '--compile', '--no-memory']),
    'bf16_batch8': ('scaling', ['--dtype', 'bf16', '--batch-size', '8', '--no-memory']),
    'bf16_batch32': ('scaling', ['--dtype', 'bf16', '--batch-size', '32', '--no-memory']),
    'bf16_mask0.5': ('scaling', ['--dtype', 'bf16', '--mask-ratio', '0.5', '--no-memory']),
    'bf16_mask0.9': ('scaling', ['--dtype', 'bf16', '--mask-ratio', '0.9', '--no-memory']),
    'bf16_vit-l': ('scaling', ['--dtype', 'bf16', '--arch', 'l', '--steps', '4', '--warmup',
                               '2', '--no-memory']),
    'loss_check': ('safety', ['--loss-check', '50', '--arch', 's', '--batch-size', '8',
                              '--dtype', 'bf16']),
    'pipeline_500x375': ('pipeline', ['--pipeline', '--num-images', '400']),
    'pipeline_1600x1200': ('pipeline', ['--pipeline', '--num-images', '200', '--jpeg-size',
                                        '1600', '1200']),
}
SMOKE_RUNS = {'fp32': ['--smoke', '--no-memory'], 'loss_check': ['--smoke', '--loss-check', '3',
                                                                 '--dtype', 'bf16'],
              'pipeline_500x375': ['--pipeline', '--smoke']}


def run(name: str, argv: List[str], out_dir: str) -> dict:
    path = osp.join(out_dir, f'{name}.json')
    cmd = [sys.executable, BENCHMARK, *argv, '--json', path]
    print('$', ' '.join(['python', osp.relpath(BENCHMARK, REPO_ROOT), *argv]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    with open(path) as f:
        return json.load(f)


def train_step_rows(results: Dict[str, dict]) -> List[str]:
    rows = ['| run | arch | batch | mask | dtype | mmpretrain img/s | mae-mm img/s | ratio | '
            'mae-mm of peak | mmpretrain of peak | GFLOP/img (mmpretrain / mae-mm) | '
            'peak RSS MB (mmpretrain / mae-mm) | step tensor peak MB | saved for backward MB |',
            '|' + '---|' * 14]
    for name, r in results.items():
        if r.get('mode') != 'train_step':
            continue
        a, b = r['impls']['mmpretrain'], r['impls']['mae_mm']
        arch = r['arch'] if isinstance(r['arch'], str) else f"{r['arch']['embed_dims']}d"
        memory = (f"{a['peak_mb']:.0f} / {b['peak_mb']:.0f}" if 'peak_mb' in a else '-')
        saved = (f"{a['saved_mb']:.0f} / {b['saved_mb']:.0f}" if 'saved_mb' in a else '-')
        tensors = (f"{a['tensor_peak_mb']:.0f} / {b['tensor_peak_mb']:.0f}"
                   if 'tensor_peak_mb' in a else '-')
        rows.append(f"| {name} | {arch} | {r['batch_size']} | {r['mask_ratio']} | "
                    f"{r['dtype']}{' compiled' if r['compile'] else ''} | "
                    f"{a['img_per_s']:.3f} | {b['img_per_s']:.3f} | **{r['speedup']:.2f}x** | "
                    f"{b['fraction_of_peak']:.1%} | {a['fraction_of_peak']:.1%} | "
                    f"{a['gflops_per_image']:.2f} / {b['gflops_per_image']:.2f} | {memory} | "
                    f"{tensors} | {saved} |")
    return rows


def other_rows(results: Dict[str, dict]) -> List[str]:
    rows = []
    for name, r in results.items():
        if r.get('mode') == 'pipeline':
            rates = r['img_per_cpu_s']
            sources = '; '.join(f"{reader} {rate:.1f} ({r['speedup_cpu'][reader]:.2f}x, wall "
                                f"{r['speedup'][reader]:.2f}x)" for reader, rate in rates.items())
            rows.append(f"- {name} ({r['data_dir']}, {r['num_images']} images), img per "
                        f"CPU-second and ratio to mmpretrain's pipeline on the folder: {sources}")
        elif r.get('mode') == 'loss_check':
            rows.append(f"- {name}: mean loss over {r['steps']} steps fp32 "
                        f"{r['mean_loss_fp32']:.5f}, {r['dtype']} {r['mean_loss_other']:.5f} "
                        f"({r['relative_difference_mean']:.3%} apart; last step "
                        f"{r['relative_difference_final']:.3%})")
    return rows


def main(argv=None) -> Dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='folder for the JSON of every run')
    parser.add_argument('--only', nargs='+', metavar='GROUP_OR_RUN',
                        choices=sorted({g for g, _ in RUNS.values()} | set(RUNS)),
                        help='groups (headline, scaling, safety, pipeline) or single runs; '
                        'the table then also lists the other runs already in --out')
    parser.add_argument('--smoke', action='store_true', help='tiny runs that check the tool')
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.smoke:
        plan = SMOKE_RUNS
    else:
        plan = {name: argv for name, (group, argv) in RUNS.items()
                if args.only is None or group in args.only or name in args.only}
    results = {}
    for name in (SMOKE_RUNS if args.smoke else RUNS):
        if name in plan:
            results[name] = run(name, plan[name], args.out)
        elif osp.isfile(osp.join(args.out, f'{name}.json')):  # from an earlier invocation
            with open(osp.join(args.out, f'{name}.json')) as f:
                results[name] = json.load(f)
    lines = train_step_rows(results) + [''] + other_rows(results)
    text = '\n'.join(lines) + '\n'
    with open(osp.join(args.out, 'table.md'), 'w') as f:
        f.write(text)
    print(text)
    return results


if __name__ == '__main__':
    main()
