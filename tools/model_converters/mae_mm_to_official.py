"""Convert a mae-mm checkpoint into the official MAE format, ``{'model': state_dict}``.

The full output (encoder + decoder) has the keys of ``mae_visualize_vit_*.pth``; with
``--encoder-only`` those of ``mae_pretrain_vit_*.pth``, which the official fine-tuning, mmdet's
ViTDet, mmseg and timm (``checkpoint_filter_fn``) read. Training checkpoints (with optimizer
state) are accepted; only the weights are written.

Examples::

    python tools/model_converters/mae_mm_to_official.py \\
        work_dirs/mae_vit-b_1600e/epoch_1600.pth mae_visualize_vit_base_mae_mm.pth
    python tools/model_converters/mae_mm_to_official.py --encoder-only \\
        work_dirs/mae_vit-b_1600e/epoch_1600.pth mae_pretrain_vit_base_mae_mm.pth
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mae_mm.utils.checkpoint import convert_state_dict, save_checkpoint_atomic  # noqa: E402
from mae_mm.utils.compat import CheckpointLoadError, load_checkpoint_file  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert a mae-mm checkpoint to the official MAE format {'model': sd}")
    parser.add_argument('src', help='mae-mm checkpoint (mmpretrain MAE checkpoints work too)')
    parser.add_argument('dst', help='output checkpoint (written atomically)')
    parser.add_argument('--encoder-only', action='store_true',
                        help='write the encoder only, like mae_pretrain_vit_*.pth')
    parser.add_argument('--quiet', action='store_true', help='print no report')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        ckpt = load_checkpoint_file(args.src, map_location='cpu')
        result = convert_state_dict(ckpt, 'official', encoder_only=args.encoder_only)
    except (CheckpointLoadError, FileNotFoundError, ValueError, TypeError) as err:
        print(f'{type(err).__name__}: {err}', file=sys.stderr)
        return 1
    save_checkpoint_atomic({'model': result.state_dict}, args.dst)
    if not args.quiet:
        print(result.report())
        print(f'saved {len(result.state_dict)} tensors to {args.dst} '
              f'({os.path.getsize(args.dst) / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
