"""Weighted k-NN accuracy of a pretrained encoder on any labelled image folder.

The cheap monitor of self-supervised pretraining: no training, one pass over the images. The
encoder of CONFIG (any mae-mm config whose ``model.backbone`` is a MaskedViT: pretraining,
fine-tuning, probing) is loaded from CHECKPOINT (mae-mm, official MAE, timm or mmpretrain format),
run unmasked, and each validation image is classified by the temperature-weighted vote of its
``k`` nearest training images under cosine similarity (Wu et al. 2018).

    python tools/analysis_tools/knn_eval.py configs/mae_vit-b_1600e.py \\
        work_dirs/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k/epoch_100.pth \\
        --train data/imagenet/train --val data/imagenet/val --k 10 20 200
    # one folder only: leave-one-out k-NN on it
    python tools/analysis_tools/knn_eval.py CONFIG CKPT --train data/photo_classes/train

Folders use the ImageNet layout, ``<folder>/<class>/**/<image>``; the validation folder must
have the same class subfolders as the training folder.
"""
import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
# Keys of a config's backbone that describe the encoder's shape (the rest is training-specific).
ENCODER_KEYS = ('arch', 'img_size', 'patch_size', 'in_channels', 'qkv_bias', 'norm_eps')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a config whose model.backbone is a MaskedViT')
    parser.add_argument('checkpoint', help='checkpoint of any supported format')
    parser.add_argument('--train', required=True, help='labelled folder of reference images')
    parser.add_argument('--val', help='labelled folder of query images (default: leave-one-out '
                        'on --train)')
    parser.add_argument('--k', type=int, nargs='+', default=[20], help='neighbours (several ok)')
    parser.add_argument('--temperature', type=float, default=0.07, help='vote exp(cos / T)')
    parser.add_argument('--feature', choices=('cls_token', 'avg_featmap'), default='cls_token',
                        help='cls token after the final norm, or the mean of the patch tokens')
    parser.add_argument('--prefix', default='backbone.',
                        help="prefix of the encoder's keys in the checkpoint")
    parser.add_argument('--img-size', type=int, help='crop size (default: the backbone img_size)')
    parser.add_argument('--resize', type=int,
                        help='short side before the centre crop (default: img_size / 0.875)')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write the results as JSON to this file')
    return parser.parse_args(argv)


def build_encoder(cfg, args: argparse.Namespace):
    """The config's encoder, unmasked, with the checkpoint loaded (key report logged)."""
    from mae_mm.registry import MODELS
    backbone_cfg = cfg.model.get('backbone')
    if not backbone_cfg:
        raise ValueError(f'{args.config} has no model.backbone: give a config whose model uses '
                         'a MaskedViT backbone')
    encoder_cfg = {key: backbone_cfg[key] for key in ENCODER_KEYS if key in backbone_cfg}
    if args.img_size:
        encoder_cfg['img_size'] = args.img_size
    encoder = MODELS.build(dict(type='MaskedViT', mask_ratio=0.0, out_type=args.feature,
                                final_norm=True, **encoder_cfg))
    encoder.load_pretrained(args.checkpoint, prefix=args.prefix)
    return encoder.eval().to(args.device)


def build_loader(folder: str, crop: int, resize: int, args: argparse.Namespace,
                 classes: Optional[Sequence[str]] = None):
    """A deterministic (resize, centre crop) dataloader over a labelled folder; ``classes``
    fixes the label order (that of the training folder)."""
    from mmengine.runner import Runner
    pipeline = [
        dict(type='LoadImageSafe', on_error='raise'),
        dict(type='mmpretrain.ResizeEdge', scale=resize, edge='short', backend='pillow',
             interpolation='bicubic'),
        dict(type='mmpretrain.CenterCrop', crop_size=crop),
        dict(type='mmpretrain.PackInputs'),
    ]
    dataset = dict(type='ImageFolder', data_root=folder, with_label=True, test_mode=True,
                   pipeline=pipeline, metainfo=dict(classes=classes) if classes else None)
    return Runner.build_dataloader(dict(
        batch_size=args.batch_size, num_workers=args.num_workers, dataset=dataset,
        sampler=dict(type='DefaultSampler', shuffle=False)))


def run(args: argparse.Namespace) -> Dict[int, Dict[str, float]]:
    """Extract features of both folders and return ``{k: {'top1': %, 'top5': %}}``."""
    import mae_mm  # noqa: F401  registries, safe checkpoint loading
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mae_mm.evaluation import extract_features, knn_evaluate
    from mae_mm.registry import MODELS
    for name in ('train', 'val'):
        folder = getattr(args, name)
        if folder and not osp.isdir(folder):
            raise FileNotFoundError(f'--{name} {folder!r} is not a folder: give a labelled image '
                                    'folder (<folder>/<class>/<image>)')
    init_default_scope('mae_mm')
    cfg = Config.fromfile(args.config)
    encoder = build_encoder(cfg, args)
    crop = encoder.img_size
    if crop[0] != crop[1]:
        raise ValueError(f'--img-size: k-NN uses square centre crops, the backbone has {crop}')
    resize = args.resize or int(round(crop[0] / 0.875))
    preprocess = cfg.model.get('data_preprocessor') or {}
    normalize = MODELS.build(dict(
        type='mmpretrain.ClsDataPreprocessor', mean=preprocess.get('mean', IMAGENET_MEAN),
        std=preprocess.get('std', IMAGENET_STD), to_rgb=preprocess.get('to_rgb', True)))

    def encode(batch):
        inputs = normalize(batch, False)['inputs'].to(args.device)
        return encoder(inputs)[-1]

    train_loader = build_loader(args.train, crop[0], resize, args)
    classes = train_loader.dataset.metainfo['classes']
    train_feats, train_labels = extract_features(encode, train_loader)
    if args.val:
        val_loader = build_loader(args.val, crop[0], resize, args, classes=classes)
        val_feats, val_labels = extract_features(encode, val_loader)
    else:
        val_feats, val_labels = train_feats, train_labels
    return knn_evaluate(train_feats, train_labels, val_feats, val_labels, len(classes), args.k,
                        args.temperature, exclude_self=not args.val)


def main(argv: Optional[List[str]] = None) -> Dict[int, Dict[str, float]]:
    """Entry point: print one line per k (and write ``--out``)."""
    args = parse_args(argv)
    results = run(args)
    query = args.val or f'{args.train} (leave-one-out)'
    for k, accuracy in results.items():
        numbers = '  '.join(f'{name} {value:.2f}' for name, value in accuracy.items())
        print(f'k-NN k={k} T={args.temperature} {args.feature} on {query}: {numbers}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({str(k): v for k, v in results.items()}, f, indent=2)
    return results


if __name__ == '__main__':
    main()
