"""Convert an official MAE, timm, mmpretrain or Hugging Face ViTMAE checkpoint into a mae-mm
checkpoint.

The output is ``{'meta': {...}, 'state_dict': {'backbone.*', 'neck.*'}}``, as MMEngine writes, so
it works as ``load_from`` of a MAE config (continue pretraining, visualise reconstructions) and as
``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` of a backbone.

Examples::

    # full official model (encoder + decoder)
    python tools/model_converters/mae_official_to_mae_mm.py \\
        mae_visualize_vit_base.pth mae_vit-b_official.pth
    # encoder-only official file (the decoder stays randomly initialised when loaded)
    python tools/model_converters/mae_official_to_mae_mm.py \\
        mae_pretrain_vit_base.pth mae_vit-b_official_encoder.pth
    # an mmpretrain / mmselfsup 1.x MAE checkpoint
    python tools/model_converters/mae_official_to_mae_mm.py \\
        mae_vit-base-p16_8xb512-amp-coslr-300e_in1k_20220829-c2cf66ba.pth mae_vit-b_mmpretrain.pth
    # a Hugging Face ViTMAEForPreTraining folder (config.json + model.safetensors or
    # pytorch_model.bin; transformers 4.x or 5.x names), e.g. a snapshot of facebook/vit-mae-base
    python tools/model_converters/mae_official_to_mae_mm.py /path/to/vit-mae-base mae_vit-b_hf.pth

A Hugging Face file keeps its ``config.json`` in ``meta['hf_config']`` (the reconstruction tool
rebuilds the model from it). Its LayerNorm eps is ``layer_norm_eps`` (1e-12 for
``facebook/vit-mae-*``), not MAE's 1e-6: a config that loads the output should set
``model.backbone.norm_eps`` and ``model.neck.norm_eps`` to it (the report says so).

Position tables are copied as they are (see :mod:`mae_mm.utils.checkpoint`).
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mae_mm.utils.checkpoint import (convert_state_dict, hf_config_of,  # noqa: E402
                                     mae_mm_checkpoint, norm_eps_note, read_checkpoint,
                                     save_checkpoint_atomic)
from mae_mm.utils.compat import CheckpointLoadError  # noqa: E402

SOURCE_FORMATS = ('auto', 'official', 'timm', 'mmpretrain', 'hf', 'mae_mm')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert an official MAE / timm / mmpretrain / Hugging Face ViTMAE checkpoint '
        'to mae-mm format')
    parser.add_argument('src', help='input checkpoint, or a Hugging Face model folder')
    parser.add_argument('dst', help='output checkpoint (written atomically)')
    parser.add_argument('--source-format', choices=SOURCE_FORMATS, default='auto',
                        help='format of src (default: detected from its keys)')
    parser.add_argument('--encoder-only', action='store_true',
                        help='keep the encoder (backbone.*) only')
    parser.add_argument('--quiet', action='store_true', help='print no report')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        ckpt = read_checkpoint(args.src, map_location='cpu')
        result = convert_state_dict(
            ckpt, 'mae_mm', encoder_only=args.encoder_only,
            source=None if args.source_format == 'auto' else args.source_format)
    except (CheckpointLoadError, FileNotFoundError, ImportError, ValueError, TypeError) as err:
        print(f'{type(err).__name__}: {err}', file=sys.stderr)
        return 1
    meta = dict(converted_from=osp.basename(osp.normpath(args.src)),
                source_format=result.source_format,
                converter='tools/model_converters/mae_official_to_mae_mm.py')
    eps_note = None
    if result.source_format == 'hf':
        hf_config = hf_config_of(ckpt)
        meta.update(hf_config=hf_config, hf_preprocessor=ckpt.get('meta', {}).get(
            'hf_preprocessor'))
        eps_note = norm_eps_note(hf_config, {'model.backbone.norm_eps': 1e-6,
                                             'model.neck.norm_eps': 1e-6}, args.src)
    save_checkpoint_atomic(mae_mm_checkpoint(result.state_dict, meta), args.dst)
    if not args.quiet:
        print(result.report())
        if eps_note:
            print(f'note: {eps_note} in configs that load {args.dst} (mae-mm\'s default is '
                  '1e-6)')
        print(f'saved {len(result.state_dict)} tensors to {args.dst} '
              f'({os.path.getsize(args.dst) / 2**20:.1f} MiB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
