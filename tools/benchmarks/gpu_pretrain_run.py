"""Pretraining throughput with the real Runner and data pipeline: step 3 of the accelerator
check (``tools/benchmarks/accelerator_check.sh``).

ViT-B/16 MAE pretraining (the repository's recipe, ``configs/mae/...400e_in1k.py``) for a fixed
number of iterations through mae-mm's runner (``build_runner``: mmengine's Runner with
``mae_mm.MAERunner``), on JPEGs generated at start (500x375: the data-pipeline benchmark's
``write_jpeg_folder``, crops of scikit-image's photographs rescaled at random, written in
parallel into one subfolder per process, the same series in each), read by ``ImageFolder`` +
``FastRandomResizedCrop`` with data loader worker processes, as a user's run reads ImageNet. Mixed precision: bf16 autocast
(``optim_wrapper.dtype='bfloat16'``) on CUDA, the wrapper's CPU bf16 elsewhere.

Measured by two hooks around every iteration (the first runs before all other hooks, the
second after all, and synchronises CUDA): the time the loop waited for the next batch (from the
end of the previous iteration to the start of this one: the data loader's ``next``) and the
whole iteration. Reported over the iterations after ``--warmup``: img/s, and the fraction of the
time the GPU waited for data (data wait / iteration time).

    python tools/benchmarks/gpu_pretrain_run.py --json out.json            # 300 iters, ViT-B/16
    python tools/benchmarks/gpu_pretrain_run.py --dry-run --json out.json  # tiny, CPU, seconds
"""
import argparse
import multiprocessing
import os
import os.path as osp
import shutil
import statistics
import sys
import tempfile
import time
from typing import List, Optional

TOOL_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(TOOL_DIR))
ANALYSIS_TOOLS = osp.join(REPO_ROOT, 'tools', 'analysis_tools')  # benchmark_pipeline
for path in (REPO_ROOT, TOOL_DIR, ANALYSIS_TOOLS):
    if path not in sys.path:
        sys.path.insert(0, path)

from accelerator_check_lib import write_json  # noqa: E402

DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', 'mae',
                          'mae_vit-base-p16_8xb512-amp-coslr-400e_in1k.py')
JPEG_SIZE = (500, 375)  # about an ImageNet photo's size


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='mae-mm pretraining config')
    parser.add_argument('--iters', type=int, default=None, help='default: 300 (dry run: 6)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='iterations left out of the figures (default: 10%%, at least 1)')
    parser.add_argument('--batch-size', type=int, default=None, help='default: 128 (dry run: 8)')
    parser.add_argument('--num-workers', type=int, default=None,
                        help="data loader workers (default: the config's, 8)")
    parser.add_argument('--num-images', type=int, default=2048, help='generated JPEGs')
    parser.add_argument('--arch', default=None, help="backbone arch override ('t', 's', 'b'...)")
    parser.add_argument('--img-size', type=int, default=None)
    parser.add_argument('--patch-size', type=int, default=None)
    parser.add_argument('--device', default=None, help='cuda or cpu (default: cuda if present)')
    parser.add_argument('--data-dir', help='folder of images to use instead of generating them')
    parser.add_argument('--work-dir', help='runner work dir (default: a temporary folder)')
    parser.add_argument('--json', metavar='PATH', help="write the result as JSON ('-': stdout)")
    parser.add_argument('--dry-run', action='store_true',
                        help="tiny: arch 't', 32 px, patch 8, 6 iterations, batch 8, 2 workers, "
                        '64 images, on CPU unless --device says otherwise')
    args = parser.parse_args(argv)
    if args.dry_run:
        args.arch = args.arch or 't'
        args.img_size = args.img_size or 32
        args.patch_size = args.patch_size or 8
        args.iters = args.iters or 6
        args.batch_size = args.batch_size or 8
        args.num_workers = 2 if args.num_workers is None else args.num_workers
        args.num_images = min(args.num_images, 64)
        args.device = args.device or 'cpu'
    args.iters = args.iters or 300
    args.batch_size = args.batch_size or 128
    if args.warmup is None:
        args.warmup = max(1, args.iters // 10)
    if args.iters <= args.warmup:
        raise SystemExit(f'--iters ({args.iters}) must exceed --warmup ({args.warmup})')
    return args


# ----------------------------------------------------------------------------- images
def generate_images(root: str, count: int) -> float:
    """``count`` JPEGs of ``JPEG_SIZE`` under ``root``, written by several processes, each
    ``write_jpeg_folder`` into its own subfolder; returns the seconds taken."""
    from benchmark_pipeline import write_jpeg_folder
    start = time.perf_counter()
    procs = max(1, min(8, (os.cpu_count() or 1), count // 32))
    bounds = [count * k // procs for k in range(procs + 1)]
    jobs = [(osp.join(root, f'part_{k}'), bounds[k + 1] - bounds[k], JPEG_SIZE)
            for k in range(procs)]
    if procs == 1:
        write_jpeg_folder(*jobs[0])
    else:
        with multiprocessing.get_context('fork').Pool(procs) as pool:
            pool.starmap(write_jpeg_folder, jobs)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- config
def build_config(args: argparse.Namespace, data_root: str, work_dir: str, cuda: bool):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    cfg.work_dir = work_dir
    backbone = cfg.model.backbone
    if args.arch is not None:
        backbone.arch = args.arch
    if args.img_size is not None:
        backbone.img_size = args.img_size
    if args.patch_size is not None:
        backbone.patch_size = args.patch_size
    if args.dry_run:
        cfg.model.neck.update(decoder_embed_dim=64, decoder_depth=1, decoder_num_heads=4)
    img_size = backbone.img_size
    loader = cfg.train_dataloader
    workers = loader.num_workers if args.num_workers is None else args.num_workers
    loader.update(batch_size=args.batch_size, num_workers=workers,
                  persistent_workers=workers > 0, pin_memory=cuda,
                  sampler=dict(type='InfiniteSampler', shuffle=True))
    loader.dataset.update(data_root=data_root, data_prefix='')
    for transform in loader.dataset.pipeline:
        if transform['type'] in ('FastRandomResizedCrop', 'RandomResizedCrop',
                                 'mmpretrain.RandomResizedCrop'):
            transform['scale'] = img_size
    wrapper = cfg.optim_wrapper
    if cuda and wrapper.get('type') in ('MixedPrecisionOptimWrapper', 'AmpOptimWrapper'):
        wrapper.dtype = 'bfloat16'
    wrapper.optimizer.lr = 1.5e-4 * args.batch_size / 256
    warm = max(1, args.iters // 10)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warm),
        dict(type='CosineAnnealingLR', T_max=args.iters - warm, by_epoch=False, begin=warm,
             end=args.iters)]
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters)
    cfg.auto_scale_lr = dict(enable=False, base_batch_size=4096)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=args.iters + 1, save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=max(1, min(50, args.iters // 3)))
    cfg.log_processor = dict(by_epoch=False, window_size=10)
    cfg.resume = False
    cfg.load_from = None
    if not cuda:
        cfg.env_cfg.dist_cfg = dict(backend='gloo')
    return cfg


# ----------------------------------------------------------------------------- timing
def timing_hooks(records: dict, cuda: bool):
    """Two hooks: one first before each iteration, one last after it."""
    import torch
    from mmengine.hooks import Hook

    class _Start(Hook):
        priority = 'HIGHEST'

        def before_train(self, runner):
            records['last_end'] = time.perf_counter()

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            now = time.perf_counter()
            records['data'].append(now - records['last_end'])

    class _End(Hook):
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            records['iter'].append(now - records['last_end'])
            records['last_end'] = now
            if outputs and 'loss' in outputs:
                records['loss'].append(float(outputs['loss']))

    return _Start(), _End()


def run(args: argparse.Namespace) -> dict:
    import torch
    cuda = (args.device or ('cuda' if torch.cuda.is_available() else 'cpu')).startswith('cuda')
    if cuda and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device here (use --dry-run or --device cpu)')
    import mae_mm  # noqa: F401  (registries)
    from mae_mm.datasets.transforms import crop_decode
    from mae_mm.engine import build_runner
    from mmengine.logging import MMLogger

    temp = tempfile.mkdtemp(prefix='mae_mm_pretrain_run_')
    result = dict(mode='pretrain_run', device='cuda' if cuda else 'cpu', config=args.config,
                  iters=args.iters, warmup_iters=args.warmup, batch_size=args.batch_size,
                  cpu_count=os.cpu_count(), dry_run=args.dry_run)
    try:
        data_root = args.data_dir
        if data_root is None:
            data_root = osp.join(temp, 'images')
            result['image_generation_s'] = generate_images(data_root, args.num_images)
            result['num_images'] = args.num_images
            result['jpeg_size'] = list(JPEG_SIZE)
        else:
            result['data_dir'] = data_root
        work_dir = args.work_dir or osp.join(temp, 'work')
        cfg = build_config(args, data_root, work_dir, cuda)
        backbone = cfg.model.backbone
        result.update(arch=backbone.arch, img_size=backbone.img_size,
                      patch_size=backbone.patch_size,
                      num_workers=cfg.train_dataloader.num_workers,
                      optim_wrapper=cfg.optim_wrapper.get('type'),
                      amp_dtype=cfg.optim_wrapper.get('dtype') if cuda else 'bfloat16 (CPU)',
                      crop_decode_extension=crop_decode.available())
        start = time.perf_counter()
        runner = build_runner(cfg)
        records = dict(data=[], iter=[], loss=[], last_end=0.0)
        for hook in timing_hooks(records, cuda):
            runner.register_hook(hook)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result['runner_build_s'] = time.perf_counter() - start
        start = time.perf_counter()
        runner.train()
        result['train_s'] = time.perf_counter() - start
        if cuda:
            result['peak_memory_mb'] = torch.cuda.max_memory_allocated() / 2**20
        MMLogger.get_current_instance().info('pretrain run finished')
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    data, iters = records['data'][args.warmup:], records['iter'][args.warmup:]
    total = sum(iters)
    result.update(
        measured_iters=len(iters), img_per_s=args.batch_size * len(iters) / total,
        img_per_s_all_iters=args.batch_size * len(records['iter']) / sum(records['iter']),
        data_wait_fraction=sum(data) / total, median_iter_s=statistics.median(iters),
        median_data_wait_s=statistics.median(data),
        first_loss=records['loss'][0] if records['loss'] else None,
        last_loss=records['loss'][-1] if records['loss'] else None)
    return result


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(f"pretrain run: {result['img_per_s']:.1f} img/s over {result['measured_iters']} "
          f"iterations (batch {result['batch_size']}, {result['num_workers']} workers); "
          f"waiting for data {result['data_wait_fraction']:.1%} of the time; loss "
          f"{result['first_loss']} -> {result['last_loss']}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == '__main__':
    main()
