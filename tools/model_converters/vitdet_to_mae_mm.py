"""Convert a ViTDet reference detector (mmdet's or detectron2's ``projects/ViTDet``) into the state
dict of mae-mm's ViTDet Mask R-CNN (``projects/vitdet``: ``mae_mm.ViTDetBackbone`` +
``mae_mm.SimpleFeaturePyramid`` + mmdet's heads).

What is converted:

- the backbone (mmdet ``backbone.*``, detectron2 ``backbone.net.*``): patch embedding, position
  table (copied as stored, at the pretraining grid), every block with its relative-position
  tables;
- the simple feature pyramid (mmdet ``neck.fpn{1,2}`` + ``neck.{lateral,fpn}_convs``,
  detectron2 ``backbone.simfp_K``) -> ``neck.stages.*``;
- mmdet's RPN and RoI heads, whose names are mmdet's Mask R-CNN names (the project's ``LN2d``,
  ``norm_layer`` in mmcv, becomes ``ln``, the name of mmpretrain's ``LN2d`` in mae-mm's configs).

What is not: detectron2's heads (``proposal_generator.*``, ``roi_heads.*``: other names and
layouts; the mmdet heads then keep their initialisation), detectron2's residual bottleneck
blocks, and ``pixel_mean``/``pixel_std``. Every key left out is listed with the reason. The
reference has no ``cls_token`` and no final ``norm``: ViTDetBackbone keeps its own, unused.

The output is ``{'meta': {...}, 'state_dict': {...}}``, usable as ``load_from`` of a config of
``projects/vitdet`` with the same architecture (whole detector) or as the backbone's
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``. The reference files
also load directly as that init_cfg (formats detected from their keys); as ``load_from`` (whole
detector), use the converted copy.

Examples::

    python tools/model_converters/vitdet_to_mae_mm.py model_final_61ccd1.pkl vitdet_b_d2.pth
    python tools/model_converters/vitdet_to_mae_mm.py --format mmdet \\
        vitdet_mask-rcnn_vit-b-mae_lsj-100e.pth vitdet_b_mmdet.pth
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mae_mm.utils.checkpoint import (convert_state_dict, detect_format,  # noqa: E402
                                     mae_mm_checkpoint, read_checkpoint, save_checkpoint_atomic)
from mae_mm.utils.compat import CheckpointLoadError  # noqa: E402

FORMAT_NAMES = {'mmdet': 'mmdet_vitdet', 'detectron2': 'detectron2_vitdet'}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an mmdet or detectron2 ViTDet checkpoint (.pth, or detectron2 .pkl) '
        'to mae-mm names: backbone and simple feature pyramid always, mmdet\'s heads as they '
        'are; detectron2\'s heads are left out (listed in the report).',
        epilog='What is converted:' + __doc__.split('Examples::')[0].split(
            'What is converted:')[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='mmdet checkpoint (.pth) or detectron2 model (.pkl / .pth)')
    parser.add_argument('dst', help='output checkpoint (written atomically)')
    parser.add_argument('--format', choices=('auto', ) + tuple(FORMAT_NAMES), default='auto',
                        help='format of src (default: detected from its keys)')
    parser.add_argument('--quiet', action='store_true', help='print no report')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        ckpt = read_checkpoint(args.src, map_location='cpu')
        detected = detect_format(ckpt)
        source = FORMAT_NAMES.get(args.format) or detected
        if detected in FORMAT_NAMES.values() and source != detected:
            raise ValueError(f'{args.src!r} has the keys of a {detected} checkpoint, not '
                             f'{source} (--format {args.format}): drop --format')
        if source not in FORMAT_NAMES.values():
            raise ValueError(f'{args.src!r} is a {source} checkpoint, not a ViTDet detector of '
                             'mmdet or detectron2: use mae_official_to_mae_mm.py for it')
        result = convert_state_dict(ckpt, 'mae_mm', source=source)
    except (CheckpointLoadError, FileNotFoundError, ValueError, TypeError) as err:
        print(f'{type(err).__name__}: {err}', file=sys.stderr)
        return 1
    if not any(k.startswith('backbone.') for k in result.state_dict):
        print(f'ValueError: no backbone key in {args.src!r} after conversion as {source}: '
              'check --format', file=sys.stderr)
        return 1
    meta = dict(converted_from=osp.basename(osp.normpath(args.src)), source_format=source,
                converter='tools/model_converters/vitdet_to_mae_mm.py',
                left_out=[key for key, _ in result.dropped])
    save_checkpoint_atomic(mae_mm_checkpoint(result.state_dict, meta), args.dst)
    if not args.quiet:
        print(result.report())
        print(f'saved {len(result.state_dict)} tensors to {args.dst} '
              f'({os.path.getsize(args.dst) / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
