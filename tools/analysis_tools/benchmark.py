"""Side-by-side training-step benchmark of mae-mm's MAE and mmpretrain's MAE (and of their data
pipelines).

Both models are built with the same settings (arch, image size, patch, mask ratio, decoder,
``norm_pix``) and timed **in one run, alternating** (A B, B A, ...) on the same batch of real
photo crops, so machine load affects both alike and their ratio stays meaningful. A step is
forward (autocast unless fp32) + backward + AdamW step. Reported: median img/s of each, the ratio,
peak memory (each implementation alone in a child process on CPU), model FLOPs per image counted
by ``torch.utils.flop_counter`` over one forward + backward, and the achieved fraction of the
machine's dense matmul peak in that dtype, measured on the spot.

Examples::

    python tools/analysis_tools/benchmark.py                       # ViT-B/16, batch 16, fp32
    python tools/analysis_tools/benchmark.py --dtype bf16 --batch-size 32 --arch l
    python tools/analysis_tools/benchmark.py configs/mae_vit-h_1600e.py --json out.json
    python tools/analysis_tools/benchmark.py --smoke               # tiny arch, 2 steps
    python tools/analysis_tools/benchmark.py --pipeline [--data-dir DIR]
    python tools/analysis_tools/benchmark.py --pixel-difference [--data-dir DIR]
    python tools/analysis_tools/benchmark.py --loss-check 50 --arch s --dtype bf16
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for path in (REPO_ROOT, osp.dirname(osp.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from benchmark_models import (DTYPES, IMPLS, build_impl, count_flops_per_image,  # noqa: E402
                              make_images, make_train_step, measure_matmul_peak, memory_probe)

DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', '_base_', 'models', 'mae_vit-base-p16.py')
SMOKE_ARCH = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG,
                        help='mae-mm config whose `model` is benchmarked (default: ViT-B/16)')
    parser.add_argument('--arch', help="override backbone arch: 't', 's', 'b', 'l', 'h'")
    parser.add_argument('--img-size', type=int, help='override backbone img_size')
    parser.add_argument('--patch-size', type=int, help='override backbone patch_size')
    parser.add_argument('--mask-ratio', type=float, help='override backbone mask_ratio')
    parser.add_argument('--no-norm-pix', action='store_true', help='plain pixel target')
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--dtype', choices=sorted(DTYPES), default='fp32',
                        help='fp32, or autocast bf16 / fp16 (fp16 on CUDA only)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--steps', type=int, default=4, help='timed steps per implementation')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps first')
    parser.add_argument('--no-fused', action='store_true',
                        help="mae-mm without the fused AdamW kernel (torch's default, as "
                        'mmpretrain)')
    parser.add_argument('--compile', action='store_true',
                        help='mae-mm with model.compile=True (torch.compile of its training '
                        'loss; the first warm-up step compiles)')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory probes')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny arch on 32 px, batch 2, 2 steps: checks the tool, times nothing')
    parser.add_argument('--json', metavar='PATH',
                        help="also write the results as JSON ('-': stdout)")
    parser.add_argument('--pipeline', action='store_true',
                        help='benchmark the data pipelines instead of the models: mmpretrain\'s on '
                             'the folder (pillow and cv2 backends); mae-mm\'s on the folder (each '
                             'decode option), on WebDataset shards and on LMDB, of the same images')
    parser.add_argument('--pixel-difference', action='store_true',
                        help='mean/max absolute difference of each decode mode of mae-mm\'s '
                             'loader to mmpretrain\'s pipeline on the same crop boxes')
    parser.add_argument('--data-dir', help='folder of JPEGs for --pipeline and --pixel-difference '
                        '(default: generated)')
    parser.add_argument('--num-images', type=int, default=400,
                        help='images per --pipeline pass (--pixel-difference: 500x375 images; a '
                        'quarter as many 1600x1200)')
    parser.add_argument('--jpeg-size', type=int, nargs=2, default=(500, 375), metavar=('W', 'H'),
                        help='size of the generated JPEGs for --pipeline without --data-dir')
    parser.add_argument('--loss-check', type=int, metavar='STEPS',
                        help='train mae-mm STEPS steps in fp32 and in --dtype from the same '
                        'start on the same batches and masks; compare the losses')
    parser.add_argument('--memory-probe', choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.smoke:
        args.batch_size, args.steps, args.warmup, args.img_size = 2, 2, 1, 32
        args.patch_size = args.patch_size or 8
        args.num_images = min(args.num_images, 8)
    if args.steps < 1 or args.batch_size < 1:
        raise SystemExit('--steps and --batch-size must be >= 1')
    if args.dtype == 'fp16' and not args.device.startswith('cuda'):
        raise SystemExit('--dtype fp16 needs --device cuda; on CPU use bf16')
    return args


def model_config(args: argparse.Namespace) -> dict:
    """The mae-mm ``model`` dict of ``args.config`` with the command-line overrides applied."""
    cfg = Config.fromfile(args.config).model.to_dict()
    backbone = cfg['backbone']
    if args.smoke:
        backbone['arch'] = dict(SMOKE_ARCH)
        cfg['neck'].update(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4)
    for key, value in (('arch', args.arch), ('img_size', args.img_size),
                       ('patch_size', args.patch_size), ('mask_ratio', args.mask_ratio)):
        if value is not None:
            backbone[key] = value
    if args.no_norm_pix:
        cfg['head']['norm_pix'] = False
    return cfg


def time_alternating(args: argparse.Namespace, cfg: dict, device: torch.device) -> Dict:
    """Median step time of each implementation, stepping them alternately (ABBA...)."""
    dtype = DTYPES[args.dtype]
    images = make_images(args.batch_size, cfg['backbone']['img_size'], device)
    steps, losses, times, cpu_times, flops = {}, {}, {}, {}, {}
    for impl in IMPLS:
        torch.manual_seed(0)
        model, optimizer = build_impl(impl, cfg, device, fused=not args.no_fused,
                                      compile_model=args.compile)
        flops[impl] = count_flops_per_image(model, images, dtype)
        steps[impl] = make_train_step(model, optimizer, dtype, device)
        losses[impl], times[impl], cpu_times[impl] = [], [], []
    for i in range(args.warmup + args.steps):
        for impl in (IMPLS if i % 2 == 0 else IMPLS[::-1]):
            start, start_cpu = time.perf_counter(), time.process_time()
            losses[impl].append(steps[impl](images))
            if i >= args.warmup:
                times[impl].append(time.perf_counter() - start)
                cpu_times[impl].append(time.process_time() - start_cpu)
    return dict(times=times, cpu_times=cpu_times, losses=losses, flops=flops)


def run_memory_probes(args: argparse.Namespace) -> Dict[str, dict]:
    """Each implementation alone in a child process, one after the other."""
    results = {}
    for impl in IMPLS:
        argv = [sys.executable, osp.abspath(__file__), *args.argv, '--memory-probe', impl]
        out = subprocess.run(argv, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f'memory probe of {impl} failed:\n{out.stderr[-2000:]}')
        results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def benchmark_models(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cfg = model_config(args)
    matmul_size = 256 if args.smoke else None
    peak_before = measure_matmul_peak(device, DTYPES[args.dtype], matmul_size)
    timing = time_alternating(args, cfg, device)
    peak = max(peak_before, measure_matmul_peak(device, DTYPES[args.dtype], matmul_size))
    memory = {} if args.no_memory else run_memory_probes(args)
    backbone = cfg['backbone']
    result = dict(
        mode='train_step', device=str(device), threads=torch.get_num_threads(),
        dtype=args.dtype, arch=backbone['arch'], img_size=backbone['img_size'],
        patch_size=backbone.get('patch_size', 16), mask_ratio=backbone.get('mask_ratio'),
        norm_pix=cfg['head'].get('norm_pix', True), batch_size=args.batch_size,
        steps=args.steps, warmup=args.warmup, fused_adamw=not args.no_fused,
        compile=args.compile, matmul_peak_gflops=peak / 1e9, impls={})
    for impl in IMPLS:
        median = statistics.median(timing['times'][impl])
        img_s = args.batch_size / median
        flops = timing['flops'][impl]
        result['impls'][impl] = dict(
            img_per_s=img_s, median_step_s=median, step_times_s=timing['times'][impl],
            # CPU seconds of this process per image (all threads): unlike wall time, hardly
            # affected by other jobs on a shared machine (spin-waiting threads count, alike).
            img_per_cpu_s=args.batch_size / statistics.median(timing['cpu_times'][impl]),
            step_cpu_times_s=timing['cpu_times'][impl],
            losses=timing['losses'][impl], gflops_per_image=flops / 1e9,
            achieved_gflops=flops * img_s / 1e9, fraction_of_peak=flops * img_s / peak,
            **memory.get(impl, {}))
    impls = result['impls']
    result['speedup'] = impls['mae_mm']['img_per_s'] / impls['mmpretrain']['img_per_s']
    result['speedup_cpu_time'] = (impls['mae_mm']['img_per_cpu_s'] /
                                  impls['mmpretrain']['img_per_cpu_s'])
    return result


def print_models(result: dict) -> None:
    print(f"{result['device']} ({result['threads']} threads), {result['dtype']}, arch "
          f"{result['arch']}, {result['img_size']} px, patch {result['patch_size']}, batch "
          f"{result['batch_size']}, mask {result['mask_ratio']}, norm_pix {result['norm_pix']}; "
          f"median of {result['steps']} alternating steps after {result['warmup']} warm-up")
    print(f"measured {result['dtype']} matmul peak: {result['matmul_peak_gflops']:.1f} GFLOP/s")
    print(f"{'':12s}{'img/s':>9s}{'img/CPU-s':>10s}{'GFLOP/img':>11s}{'GFLOP/s':>9s}{'of peak':>9s}"
          f"{'peak MB':>9s}{'step +MB':>9s}{'tensor MB':>10s}{'saved MB':>9s}")
    for impl, r in result['impls'].items():
        print(f"{impl:12s}{r['img_per_s']:9.3f}{r['img_per_cpu_s']:10.3f}"
              f"{r['gflops_per_image']:11.2f}"
              f"{r['achieved_gflops']:9.1f}{r['fraction_of_peak']:9.1%}"
              f"{r.get('peak_mb', float('nan')):9.0f}{r.get('step_rise_mb', float('nan')):9.0f}"
              f"{r.get('tensor_peak_mb', float('nan')):10.0f}{r.get('saved_mb', float('nan')):9.0f}")
    print(f"mae_mm / mmpretrain throughput: {result['speedup']:.3f}x (per CPU second: "
          f"{result['speedup_cpu_time']:.3f}x)")


def loss_check(args: argparse.Namespace) -> dict:
    """mae-mm trained ``args.loss_check`` steps in fp32 and in ``args.dtype`` from the same
    initial weights on the same batches and masks (noise fixed per step)."""
    device = torch.device(args.device)
    cfg = model_config(args)
    img_size, patch = cfg['backbone']['img_size'], cfg['backbone'].get('patch_size', 16)
    length = (img_size // patch)**2
    curves = {}
    for name in ('fp32', args.dtype):
        torch.manual_seed(0)
        model, optimizer = build_impl('mae_mm', cfg, device, fused=not args.no_fused)
        dtype, curve = DTYPES[name], []
        for step in range(args.loss_check):
            gen = torch.Generator().manual_seed(step)
            images = make_images(args.batch_size, img_size, device, seed=step % 8)
            noise = torch.rand(args.batch_size, length, generator=gen).to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = model.forward_loss(images, noise)[0]
            loss.backward()
            optimizer.step()
            curve.append(float(loss.detach()))
        curves[name] = curve
    reference, other = curves['fp32'], curves[args.dtype]
    mean_ref, mean_other = sum(reference) / len(reference), sum(other) / len(other)
    return dict(mode='loss_check', dtype=args.dtype, steps=args.loss_check, curves=curves,
                mean_loss_fp32=mean_ref, mean_loss_other=mean_other,
                relative_difference_mean=abs(mean_other - mean_ref) / mean_ref,
                relative_difference_final=abs(other[-1] - reference[-1]) / reference[-1])


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    # Quiet mmengine's per-parameter init report; the benchmark's own lines are the output.
    MMLogger.get_instance('mae_mm_benchmark', log_level='WARNING')
    if args.memory_probe:
        cfg = model_config(args)
        probe = memory_probe(args.memory_probe, cfg, args.batch_size, cfg['backbone']['img_size'],
                             args.dtype, torch.device(args.device), fused=not args.no_fused,
                             compile_model=args.compile)
        print(json.dumps(probe))
        return probe
    if args.pipeline:
        from benchmark_pipeline import benchmark_pipelines, print_pipelines
        result = benchmark_pipelines(args.data_dir, args.num_images, smoke=args.smoke,
                                     jpeg_size=tuple(args.jpeg_size))
        print_pipelines(result)
    elif args.pixel_difference:
        from pixel_difference import pixel_differences, print_differences
        result = pixel_differences(args.data_dir, args.num_images, smoke=args.smoke)
        print_differences(result)
    elif args.loss_check:
        result = loss_check(args)
        print(f"mean loss over {result['steps']} steps: fp32 {result['mean_loss_fp32']:.5f}, "
              f"{result['dtype']} {result['mean_loss_other']:.5f} (relative difference "
              f"{result['relative_difference_mean']:.3%}; final step "
              f"{result['relative_difference_final']:.3%})")
    else:
        result = benchmark_models(args)
        print_models(result)
    if args.json:
        text = json.dumps(result, indent=2)
        if args.json == '-':
            print(text)
        else:
            with open(args.json, 'w') as f:
                f.write(text + '\n')
    return result


if __name__ == '__main__':
    main()
