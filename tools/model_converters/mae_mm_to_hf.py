"""Convert a MAE checkpoint (mae-mm, official ``mae_visualize_*``, mmpretrain) into a Hugging Face
``ViTMAEForPreTraining`` folder: ``config.json`` and ``model.safetensors`` (``--bin``:
``pytorch_model.bin``) and ``preprocessor_config.json`` (the model's normalisation), which
``transformers.ViTMAEForPreTraining.from_pretrained(DST)`` and ``AutoImageProcessor`` load.

The weights get transformers 4.x names (``vit.encoder.layer.N.attention.attention.query`` ...),
which transformers 5.x renames on loading; ``--hf-names v5`` writes the 5.x names
(``vit.layers.N.attention.q_proj`` ...), which only transformers >= 5.17 reads. The model is first
rebuilt as the reconstruction tool does (``--config``, else the config stored in the
checkpoint, else a Hugging Face config, else the weights' shapes) and loaded strictly, so
``config.json`` describes exactly the weights, including ``layer_norm_eps`` (mae-mm's 1e-6).

Example::

    python tools/model_converters/mae_mm_to_hf.py work_dirs/mae_vit-b_1600e/epoch_1600.pth \\
        vit-mae-base-mae-mm/
"""
import argparse
import json
import os
import os.path as osp
import sys
import uuid
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mae_mm.utils.checkpoint import convert_state_dict, save_checkpoint_atomic  # noqa: E402
from mae_mm.utils.compat import CheckpointLoadError  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a MAE checkpoint to a Hugging Face ViTMAEForPreTraining folder')
    parser.add_argument('src', help='mae-mm checkpoint (official mae_visualize_* and mmpretrain '
                        'MAE checkpoints work too)')
    parser.add_argument('dst', help='output folder (config.json + weights)')
    parser.add_argument('--config', help='config of the checkpoint\'s model (default: the one '
                        'stored in the checkpoint, else inferred from the weights)')
    parser.add_argument('--bin', action='store_true',
                        help='write pytorch_model.bin instead of model.safetensors')
    parser.add_argument('--hf-names', choices=('v4', 'v5'), default='v4',
                        help='transformers 4.x names (read by 4.x and 5.x; default) or 5.x names')
    parser.add_argument('--quiet', action='store_true', help='print no report')
    return parser.parse_args(argv)


def _write_atomic(path: str, write) -> None:
    tmp = osp.join(osp.dirname(path), f'.{osp.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        import mae_mm  # noqa: F401  (registries)
        from mae_mm.visualization.mae_from_checkpoint import (
            build_mae_from_checkpoint, hf_config_from_model, hf_preprocessor_config_from_model)
        model, source = build_mae_from_checkpoint(args.src, args.config)
        hf_config = hf_config_from_model(model)
        preprocessor = hf_preprocessor_config_from_model(model)
        result = convert_state_dict(model.state_dict(), 'hf', source='mae_mm',
                                    hf_names=args.hf_names)
        if not args.bin:
            try:
                from safetensors.torch import save_file
            except ImportError:
                raise ImportError('writing model.safetensors needs the safetensors package: '
                                  'pip install safetensors (or pass --bin)') from None
    except (CheckpointLoadError, FileNotFoundError, ImportError, ValueError, TypeError) as err:
        print(f'{type(err).__name__}: {err}', file=sys.stderr)
        return 1
    os.makedirs(args.dst, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in result.state_dict.items()}
    if args.bin:
        weights = osp.join(args.dst, 'pytorch_model.bin')
        save_checkpoint_atomic(state, weights)
    else:
        weights = osp.join(args.dst, 'model.safetensors')
        _write_atomic(weights, lambda tmp: save_file(state, tmp, metadata={'format': 'pt'}))

    def json_writer(data):
        def write(tmp: str) -> None:
            with open(tmp, 'w', encoding='utf-8') as f:
                json.dump(data, f, indent=2, sort_keys=True)
                f.write('\n')
        return write

    _write_atomic(osp.join(args.dst, 'config.json'), json_writer(hf_config))
    if preprocessor is not None:
        _write_atomic(osp.join(args.dst, 'preprocessor_config.json'), json_writer(preprocessor))
    if not args.quiet:
        print(f'model settings: {source}')
        print(result.report())
        print(f'saved {len(state)} tensors to {weights} and config.json '
              f'(layer_norm_eps {hf_config["layer_norm_eps"]:g})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
