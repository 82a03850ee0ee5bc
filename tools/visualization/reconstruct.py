"""Draw MAE reconstructions of any image(s) with any full MAE checkpoint, as a PNG grid.

One row per image: original | masked input | reconstruction | reconstruction with the visible
patches pasted back. Examples::

    # a mae-mm training checkpoint: the model is rebuilt from the config stored inside it
    python tools/visualization/reconstruct.py work_dirs/quickstart/iter_1000.pth \\
        data/quickstart/held_out --out recon.png
    # the official demo checkpoint (facebookresearch/mae), settings read off the weights
    python tools/visualization/reconstruct.py mae_visualize_vit_large.pth cat.jpg dog.jpg \\
        --img-size 224 --seed 2 --mask-ratio 0.75 --out recon.png
    # a Hugging Face ViTMAE folder (config.json + model.safetensors or pytorch_model.bin), e.g. a
    # snapshot of facebook/vit-mae-base: settings (LayerNorm eps 1e-12) from its config.json
    python tools/visualization/reconstruct.py /path/to/vit-mae-base cat.jpg --out recon.png
    # any checkpoint with the config it was trained with; rectangular images (H W)
    python tools/visualization/reconstruct.py ckpt.pth photos/ --config configs/mae/xxx.py \\
        --img-size 224 320

Model settings come from ``--config`` if given, else from the config MMEngine stores in the
checkpoint, else from a Hugging Face ``config.json`` beside the weights, else from the weights'
shapes (see :mod:`mae_mm.visualization.mae_from_checkpoint`).
Folders with more images than ``--max-images`` are sampled (seeded by ``--image-seed``), not
cut to their first files. An image that cannot be read stops the tool with its name, unless
``--skip-unreadable`` leaves it out.
For norm-pix models the reconstruction is de-normalised with the hidden patches' true mean and
std (the model predicts normalised patches only), and the figure says so.
"""
import argparse
import os
import os.path as osp
import random
import sys
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line options (``argv`` without the program name, default ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(description='MAE reconstruction figure')
    parser.add_argument('checkpoint', help='mae-mm, official (mae_visualize_*), timm-with-decoder '
                        'or mmpretrain MAE checkpoint, or a Hugging Face ViTMAEForPreTraining '
                        'folder / model.safetensors / pytorch_model.bin')
    parser.add_argument('images', nargs='+', help='image files and/or folders (searched '
                        'recursively)')
    parser.add_argument('--config', help='config of the checkpoint\'s model (default: the one '
                        'stored in the checkpoint, else inferred from the weights)')
    parser.add_argument('--out', default='reconstruction.png', help='output PNG')
    parser.add_argument('--img-size', type=int, nargs='+', metavar='SIZE',
                        help='resize images to SIZE (square) or H W (multiples of the patch '
                        'size); default: the model\'s training size')
    parser.add_argument('--seed', type=int, default=0, help='seed of the mask')
    parser.add_argument('--mask-ratio', type=float, help='fraction of patches hidden (default: '
                        'the model\'s)')
    parser.add_argument('--max-images', type=int, default=8, help='at most this many images: '
                        'the files given, then a seeded sample of the folders\' images')
    parser.add_argument('--image-seed', type=int, default=0, help='seed of the sample drawn '
                        'from folders with more images than --max-images')
    parser.add_argument('--skip-unreadable', action='store_true', help='leave out images that '
                        'cannot be read or decoded (default: stop, naming the file)')
    norm = parser.add_mutually_exclusive_group()
    norm.add_argument('--norm-pix', dest='norm_pix', action='store_true', default=None,
                      help='the model predicts per-patch normalised pixels (weights do not '
                      'record it; default: the config\'s, else off as for mae_visualize_*)')
    norm.add_argument('--no-norm-pix', dest='norm_pix', action='store_false')
    parser.add_argument('--title', help='figure title (default: checkpoint name and mask)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--save-arrays', help='also write the numbers behind the figure to '
                        'this .npz (input, reconstruction, pasted, mask, panels)')
    return parser.parse_args(argv)


def collect_images(inputs: List[str], max_images: int, seed: int = 0) -> List[str]:
    """At most ``max_images`` images: the files given (in order), then images of the given
    folders, all of them when they fit, else a sample drawn with ``seed`` across the folders
    (in the folders' sorted order), not their first files."""
    from mae_mm.datasets import IMG_EXTENSIONS, scan_images
    files, in_folders = [], []
    for item in inputs:
        if osp.isdir(item):
            in_folders += [osp.join(item, name) for name in scan_images(item, IMG_EXTENSIONS)]
        elif osp.isfile(item):
            files.append(item)
        else:
            raise SystemExit(f'image path {item!r} does not exist: give image files or folders')
    if not files and not in_folders:
        raise SystemExit(f'no image ({", ".join(IMG_EXTENSIONS)}) under {inputs}: give image '
                         'files or folders that hold some')
    room = max(0, max_images - len(files))
    if len(in_folders) > room:
        chosen = set(random.Random(seed).sample(range(len(in_folders)), room))
        in_folders = [path for i, path in enumerate(in_folders) if i in chosen]
    return (files + in_folders)[:max_images]


def drop_unreadable(images: List[str], skip: bool) -> List[str]:
    """``images`` without the files that cannot be decoded; without ``skip`` the first such file
    stops the tool with a one-line message naming it and the option that leaves it out."""
    from mae_mm.visualization import unreadable_images
    bad = unreadable_images(images)
    if not bad:
        return images
    if not skip:
        more = f' (and {len(bad) - 1} more unreadable)' if len(bad) > 1 else ''
        raise SystemExit(f'{bad[0][1]}{more}: replace or remove the file, or pass '
                         '--skip-unreadable to leave unreadable images out')
    print(f'left out {len(bad)} unreadable image(s): ' + '; '.join(reason for _, reason in bad))
    kept = [path for path in images if path not in {p for p, _ in bad}]
    if not kept:
        raise SystemExit('none of the images can be read: give other image files or folders')
    return kept


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for bad options, before the checkpoint is read."""
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        raise SystemExit(f'--img-size takes SIZE or H W, got {len(args.img_size)} numbers')
    if args.mask_ratio is not None and not 0 < args.mask_ratio < 1:
        raise SystemExit(f'--mask-ratio must be in (0, 1), got {args.mask_ratio}')
    if not args.out.lower().endswith('.png'):
        raise SystemExit(f'--out must name a .png file, got {args.out!r}')
    if args.save_arrays and not args.save_arrays.endswith('.npz'):
        raise SystemExit(f'--save-arrays must name a .npz file, got {args.save_arrays!r}')
    if args.max_images < 1:
        raise SystemExit(f'--max-images must be at least 1, got {args.max_images}')


def image_size(args: argparse.Namespace, model) -> tuple:
    """(H, W) to resize to, checked against the patch size."""
    if args.img_size is None:
        return tuple(model.backbone.img_size)
    size = tuple(args.img_size) * (2 if len(args.img_size) == 1 else 1)
    patch = model.backbone.patch_size
    if size[0] % patch or size[1] % patch:
        raise SystemExit(f'--img-size {size[0]} {size[1]} is not a multiple of the patch size '
                         f'{patch}: use e.g. {size[0] // patch * patch} {size[1] // patch * patch}')
    return size


def main(argv: Optional[List[str]] = None) -> str:
    """Entry point; returns the path of the figure."""
    args = parse_args(argv)
    check_args(args)
    images = collect_images(args.images, args.max_images, args.image_seed)
    import mae_mm  # noqa: F401  (registries, safe checkpoint loading)
    images = drop_unreadable(images, args.skip_unreadable)
    import numpy as np
    import torch

    from mae_mm.visualization import (build_mae_from_checkpoint, load_images_for_model,
                                      reconstruct_with_seed, save_reconstruction_figure)
    from mae_mm.utils.compat import CheckpointLoadError
    try:
        model, source = build_mae_from_checkpoint(args.checkpoint, args.config, args.norm_pix,
                                                  args.device)
    except (ValueError, FileNotFoundError, ImportError, CheckpointLoadError) as err:
        raise SystemExit(str(err)) from None
    if args.mask_ratio is not None:
        model.backbone.mask_ratio = args.mask_ratio
    size = image_size(args, model)
    imgs = load_images_for_model(model, images, size)
    try:
        with torch.no_grad():
            outputs, panels = reconstruct_with_seed(model, imgs, seed=args.seed)
    except ValueError as err:  # e.g. a mask ratio the model's grid/block strategy cannot draw
        raise SystemExit(f'cannot mask these images: {err}') from None
    title = args.title or (f'{osp.basename(osp.normpath(args.checkpoint))}: mask ratio '
                           f'{model.backbone.mask_ratio}, seed {args.seed}')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    save_reconstruction_figure(panels, args.out, title=title, norm_pix=model.head.norm_pix)
    if args.save_arrays:
        np.savez(args.save_arrays, panels=panels, image_paths=np.array(images),
                 **{key: value.numpy() for key, value in outputs.items()})
    print(f'model settings: {source}')
    print(f'reconstruction figure ({len(images)} images, {size[0]}x{size[1]}): {args.out}')
    return args.out


if __name__ == '__main__':
    main()
