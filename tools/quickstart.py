"""CPU quick start: MAE pretraining on real photos in a few minutes, then a reconstruction figure.

    python tools/quickstart.py                 # 1000 iterations, a few minutes on 2 CPU cores
    python tools/quickstart.py --iters 50      # a smoke run
    python tools/quickstart.py --resume        # continue an interrupted run (same --iters)

1. Writes random crops of the photographs bundled with scikit-image to ``data/quickstart/train``
   (an ordinary image folder; nothing is downloaded), and to ``data/quickstart/held_out`` crops
   of the natural photographs chosen for their structure (seeded; not near-uniform, not the
   synthetic images), which training never sees.
2. Trains a small MAE with ``configs/quickstart/...`` through the mmengine Runner (progress,
   ETA and loss are logged; checkpoints go to the work dir every quarter of the run).
3. Reconstructs the held-out crops with the final model and writes ``reconstruction.png``. The
   quick-start model predicts unnormalised pixels (``norm_pix=False``), so the figure shows its
   prediction alone; for a norm-pix config (``--config``) the figure says that the hidden
   patches' true mean and std were used to draw it.
"""
import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', 'quickstart',
                          'mae_vit-tiny-p4_1xb64-1000i_photos-32px.py')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG, help='quick-start config')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s, 1000)')
    parser.add_argument('--work-dir', default='work_dirs/quickstart')
    parser.add_argument('--data-dir', default='data/quickstart',
                        help='where the photo crops are written (reused when present)')
    parser.add_argument('--num-images', type=int, default=2000)
    parser.add_argument('--num-figure-images', type=int, default=6)
    parser.add_argument('--seed', type=int, default=0, help='seed of training and figure mask')
    parser.add_argument('--resume', nargs='?', const='auto', metavar='CKPT',
                        help='continue an interrupted run: from the newest complete checkpoint '
                        'of the work dir, or from CKPT (give the same --iters as before)')
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, train_dir: str):
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    cfg.work_dir = args.work_dir
    cfg.train_dataloader.dataset.data_root = train_dir
    cfg.train_dataloader.dataset.data_prefix = ''
    cfg.randomness = dict(seed=args.seed)
    if args.resume:
        cfg.resume = True
        cfg.load_from = None if args.resume == 'auto' else args.resume
    if args.iters is not None:
        warmup = max(1, min(100, args.iters // 10))
        cfg.train_cfg.max_iters = args.iters
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
            dict(type='CosineAnnealingLR', T_max=max(1, args.iters - warmup), by_epoch=False,
                 begin=warmup, end=args.iters),
        ]
        cfg.default_hooks.checkpoint.interval = max(1, args.iters // 4)
        cfg.default_hooks.logger.interval = max(1, min(50, args.iters // 10))
    return cfg


def main(argv=None) -> str:
    args = parse_args(argv)
    import mae_mm  # noqa: F401  (registers modules, checkpoint compatibility)
    from mae_mm.engine import build_runner

    from mae_mm.datasets.embedded_photos import write_photo_crops, write_structured_crops
    from mae_mm.visualization import draw_reconstructions

    train_dir = osp.join(args.data_dir, 'train')
    figure_dir = osp.join(args.data_dir, 'held_out')
    print(f'[quickstart] writing photo crops to {args.data_dir} ...', flush=True)
    write_photo_crops(train_dir, num_images=args.num_images, seed=args.seed)
    images = write_structured_crops(figure_dir, num_images=args.num_figure_images,
                                    seed=args.seed + 1)

    cfg = build_config(args, train_dir)
    runner = build_runner(cfg)
    runner.train()

    model = runner.model.module if hasattr(runner.model, 'module') else runner.model
    target = ('per-patch normalised pixels' if model.head.norm_pix else
              'pixels, shown as predicted')
    figure = draw_reconstructions(
        model, images, osp.join(runner.work_dir, 'reconstruction.png'),
        seed=args.seed, title=f'MAE quick start, {runner.iter} iterations, mask ratio '
        f'{model.backbone.mask_ratio}, target: {target}')
    ckpt = osp.join(runner.work_dir, f'iter_{runner.iter}.pth')
    print(f'[quickstart] checkpoint: {ckpt}')
    print(f'[quickstart] reconstruction figure: {figure}')
    return figure


if __name__ == '__main__':
    main()
