"""Measure what each of ViTDetBackbone's non-reference options changes, on the shipped geometry.

The ViT-B/16 backbone of projects/vitdet/configs/vitdet_mask-rcnn_vit-b_lsj-100e_coco.py (1024 px
inputs, a 64 x 64 grid, windows of 14 padded to 70 x 70, global blocks 2/5/8/11, relative
position, the table of the 224 px pretraining) and its simple feature pyramid, run with the
reference's defaults and with one option at a time. Printed: the max relative difference
``max|a - b| / max|b|`` of one windowed block's output, of the backbone's map and of the pyramid's
levels (b: the reference default).

Weights: mae-mm's MAE initialisation with the fixed 2-D sin-cos table of MAE pretraining, the
biases, LayerNorms and relative tables perturbed (seed 0; a fine-tuned model has non-zero ones),
or a MAE checkpoint with ``--checkpoint`` (its relative tables are zero: perturbed as well).

    OMP_NUM_THREADS=2 python projects/vitdet/tools/measure_reference_options.py [--no-sgd]

(about 5 minutes on 2 CPU cores; ``--no-sgd`` skips the two backward passes of the fine-tuning
step, the slowest part.)
"""
import argparse
import copy
import time
import zlib

import torch
import torch.nn.functional as F

from mae_mm.models.backbones import ViTDetBackbone
from mae_mm.models.necks import SimpleFeaturePyramid

SIZE, PATCH = 1024, 16
# A COCO test image resized to 1024 on the long side (640 x 427 -> 1024 x 683).
TEST_IMAGE = (683, 1024)


def build(checkpoint=None, **options):
    torch.manual_seed(0)
    backbone = ViTDetBackbone(arch='b', img_size=SIZE, patch_size=PATCH, window_size=14,
                              global_attn_indexes=(2, 5, 8, 11), pretrain_img_size=224,
                              drop_path_rate=0.0, **options)
    neck = SimpleFeaturePyramid(768, 256, (4.0, 2.0, 1.0, 0.5), num_outs=5)
    if checkpoint:
        backbone.load_pretrained(checkpoint)
    with torch.no_grad():
        for prefix, module in (('backbone.', backbone), ('neck.', neck)):
            for name, param in module.named_parameters():
                # Seeded by the name: the same perturbation whatever the options.
                gen = torch.Generator().manual_seed(zlib.crc32((prefix + name).encode()))
                noise = torch.randn(param.shape, generator=gen)
                if 'rel_pos' in name:
                    param.add_(0.02 * noise)
                elif param.ndim == 1 and name.endswith('weight'):
                    param.add_(0.1 * noise)
                elif param.ndim == 1:
                    param.add_(0.02 * noise)
    return backbone.eval(), neck.eval()


def max_rel(a, b):
    if isinstance(a, (tuple, list)):
        return max(max_rel(x, y) for x, y in zip(a, b))
    return ((a - b).abs().max() / b.abs().max()).item()


def run(backbone, neck, x):
    with torch.no_grad():
        feature = backbone(x)[0]
        return feature, neck(feature)


def sgd_step(backbone, neck, x, target, lr):
    params = [p for m in (backbone, neck) for p in m.parameters() if p.requires_grad]
    outs = neck(backbone(x)[0])
    sum((o * t).mean() for o, t in zip(outs, target)).backward()
    torch.optim.SGD(params, lr=lr).step()
    return run(backbone, neck, x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', help='a MAE ViT-B/16 checkpoint (any format)')
    parser.add_argument('--no-sgd', action='store_true', help='skip the fine-tuning step')
    parser.add_argument('--lr', type=float, default=1.0, help='SGD step size (default 1.0)')
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(1)
    square = torch.randn(1, 3, SIZE, SIZE)
    image = square[..., :TEST_IMAGE[0], :TEST_IMAGE[1]].clone()
    canvas = F.pad(image, (0, SIZE - TEST_IMAGE[1], 0, SIZE - TEST_IMAGE[0]))
    reference, neck = build(args.checkpoint)
    ref_feature, ref_pyramid = run(reference, neck, square)
    print(f'shipped geometry: {SIZE} x {SIZE} input, 64 x 64 grid, windows of 14 (70 x 70 '
          'padded), pos table 14 x 14 interpolated to 64 x 64')

    # 1. mask_padded_keys: one windowed block, the backbone, the pyramid.
    masked, _ = build(args.checkpoint, mask_padded_keys=True)
    with torch.no_grad():
        tokens = reference.patch_embed.proj(square).permute(0, 2, 3, 1)
        tokens = tokens + reference.position_embedding((64, 64))[:, 1:].reshape(1, 64, 64, -1)
        block_ref, block_masked = reference.blocks[0](tokens), masked.blocks[0](tokens)
        padded = torch.zeros(64, 64, dtype=torch.bool)
        padded[56:, :] = True
        padded[:, 56:] = True
    feature, pyramid = run(masked, neck, square)
    edge = (block_masked - block_ref)[0][padded].abs().max() / block_ref.abs().max()
    print(f'mask_padded_keys=True: block 0 {max_rel(block_masked, block_ref):.2e} '
          f'(tokens in padded windows: {padded.float().mean():.0%}, their max {edge:.2e}), '
          f'backbone {max_rel(feature, ref_feature):.2e}, pyramid {max_rel(pyramid, ref_pyramid):.2e}')
    del masked

    # 2. pos_embed_resample_at_load: same table at 64 x 64 as the reference's interpolation;
    # another grid (a test image that is not padded) resamples it twice.
    legacy, _ = build(args.checkpoint, pos_embed_resample_at_load=True)
    legacy_neck = copy.deepcopy(neck)
    legacy.load_pretrained({'state_dict': {
        f'backbone.{k}': v for k, v in reference.state_dict().items() if 'rel_pos' not in k}})
    legacy.load_state_dict({k: v for k, v in reference.state_dict().items() if 'rel_pos' in k},
                           strict=False)
    feature, pyramid = run(legacy, legacy_neck, square)
    ref_image = run(reference, neck, image)
    image_feature, image_pyramid = run(legacy, legacy_neck, image)
    print(f'pos_embed_resample_at_load=True: at 1024 x 1024 backbone '
          f'{max_rel(feature, ref_feature):.2e}, pyramid {max_rel(pyramid, ref_pyramid):.2e}; '
          f'unpadded {TEST_IMAGE[0]} x {TEST_IMAGE[1]} input: backbone '
          f'{max_rel(image_feature, ref_image[0]):.2e}, pyramid '
          f'{max_rel(image_pyramid, ref_image[1]):.2e}')
    if not args.no_sgd:
        target = [torch.randn_like(level) for level in ref_pyramid]
        ref_step = sgd_step(reference, neck, square, target, args.lr)
        legacy_step = sgd_step(legacy, legacy_neck, square, target, args.lr)
        print(f'  after one SGD step (lr {args.lr}, loss sum_l mean(p_l * t_l)) from the same '
              f'weights: backbone {max_rel(legacy_step[0], ref_step[0]):.2e}, pyramid '
              f'{max_rel(legacy_step[1], ref_step[1]):.2e} (the step itself moved the '
              f'reference backbone by {max_rel(ref_step[0], ref_feature):.2e})')
        reference, neck = build(args.checkpoint)
    del legacy, legacy_neck

    # 3. pad_patch_remainder: no effect at 1024 (a multiple of 16); on the unpadded test image
    # (683 = 42 x 16 + 11 rows) the maps get a 43rd row of patches, half zeros.
    remainder, _ = build(args.checkpoint, pad_patch_remainder=True)
    feature, _ = run(remainder, neck, image)
    rows, cols = ref_image[0].shape[-2:]
    print(f'pad_patch_remainder=True: none at 1024 x 1024; unpadded {TEST_IMAGE[0]} x '
          f'{TEST_IMAGE[1]} input: grid {tuple(feature.shape[-2:])} instead of {(rows, cols)}, '
          f'backbone over the common grid {max_rel(feature[..., :rows, :cols], ref_image[0]):.2e}')
    del remainder

    # 4. pad_to_img_size + crop_to_input: the backbone features of the canvas cropped to the
    # image; the pyramid then runs on the image only instead of the padded canvas.
    cropping, _ = build(args.checkpoint, pad_to_img_size=True, crop_to_input=True)
    canvas_feature, canvas_pyramid = run(reference, neck, canvas)
    feature, pyramid = run(cropping, neck, image)
    inside = [level[..., :p.shape[-2], :p.shape[-1]] for level, p in zip(canvas_pyramid, pyramid)]
    print(f'pad_to_img_size=True, crop_to_input=True on a {TEST_IMAGE[0]} x {TEST_IMAGE[1]} '
          f'image: backbone {max_rel(feature, canvas_feature[..., :feature.shape[-2], :]):.2e} '
          f'(a crop of the reference\'s), pyramid inside the image {max_rel(pyramid, inside):.2e}'
          ' (per level: ' + ', '.join(f'{max_rel(a, b):.2e}' for a, b in zip(pyramid, inside))
          + ')')
    padding_only, _ = build(args.checkpoint, pad_to_img_size=True)
    feature, pyramid = run(padding_only, neck, image)
    print(f'pad_to_img_size=True alone on that image: backbone {max_rel(feature, canvas_feature):.2e}'
          f', pyramid {max_rel(pyramid, canvas_pyramid):.2e} (the reference\'s square padding)')
    print(f'({time.time() - start:.0f} s)')


if __name__ == '__main__':
    main()
