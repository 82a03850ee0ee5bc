"""Make a training checkpoint publishable: weights and meta only, sha256 in the file name.

Like mmpretrain's ``tools/model_converters/publish_model.py``, but reading through mae-mm's safe
loader (torch >= 2.6 refuses mmengine training checkpoints with a bare ``torch.load``):

- drops ``optimizer``, ``param_schedulers``, ``message_hub`` and ``hook_msgs``;
- EMA: MMEngine's ``EMAHook`` saves the EMA weights in ``state_dict`` and the raw ones in
  ``ema_state_dict``. The EMA weights are kept by default; ``--no-ema`` keeps the raw ones;
- adds ``meta.mae_mm_version``;
- writes ``{out}_{YYYYMMDD}-{sha256[:8]}.pth`` (the OpenMMLab naming; ``--no-date`` leaves the
  date out), atomically.

Example::

    python tools/model_converters/publish_model.py \\
        work_dirs/mae_vit-b_1600e/epoch_1600.pth mae_vit-b-p16_8xb512-amp-coslr-1600e_in1k.pth
"""
import argparse
import datetime
import hashlib
import os
import os.path as osp
import sys
from collections import OrderedDict
from typing import List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mae_mm.utils.checkpoint import save_checkpoint_atomic, unwrap_state_dict  # noqa: E402
from mae_mm.utils.compat import CheckpointLoadError, load_checkpoint_file  # noqa: E402

TRAINING_STATE = ('optimizer', 'param_schedulers', 'message_hub', 'hook_msgs')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Strip training state from a checkpoint and '
                                     'put its sha256 in the file name')
    parser.add_argument('in_file', help='training checkpoint')
    parser.add_argument('out_file', help='output name; the date and hash are appended')
    parser.add_argument('--no-ema', action='store_true',
                        help='publish the raw weights instead of the EMA ones (EMAHook runs)')
    parser.add_argument('--no-date', action='store_true', help='leave the date out of the name')
    return parser.parse_args(argv)


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def strip_checkpoint(checkpoint: dict, no_ema: bool = False) -> dict:
    """The publishable part of an MMEngine checkpoint (a new dict; the input is not changed)."""
    from mae_mm.version import __version__
    checkpoint = dict(checkpoint)
    for key in TRAINING_STATE:
        checkpoint.pop(key, None)
    if 'state_dict' not in checkpoint:  # a bare or ``{'model': sd}`` state dict
        state, _ = unwrap_state_dict(checkpoint)
        checkpoint = dict(state_dict=state, meta=checkpoint.get('meta') or {})
    state = OrderedDict(checkpoint['state_dict'])
    ema = checkpoint.pop('ema_state_dict', None)
    if ema is not None:
        if no_ema:
            # EMAHook swapped: ``ema_state_dict`` holds the raw weights as ``module.<key>``
            # (plus its ``steps`` counter).
            raw = {k[len('module.'):]: v for k, v in ema.items() if k.startswith('module.')}
            unknown = sorted(set(raw) - set(state))
            if unknown:
                raise ValueError(f'ema_state_dict has keys the model does not: {unknown[:5]}')
            state.update(raw)
            print('the checkpoint has EMA weights: publishing the raw weights (--no-ema)')
        else:
            print('the checkpoint has EMA weights: publishing them (use --no-ema for the raw '
                  'weights)')
    checkpoint['state_dict'] = state
    meta = dict(checkpoint.get('meta') or {})
    meta.setdefault('mae_mm_version', __version__)
    checkpoint['meta'] = meta
    return checkpoint


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        checkpoint = load_checkpoint_file(args.in_file, map_location='cpu')
        checkpoint = strip_checkpoint(checkpoint, args.no_ema)
    except (CheckpointLoadError, FileNotFoundError, ValueError, TypeError) as err:
        print(f'{type(err).__name__}: {err}', file=sys.stderr)
        return 1
    stem = args.out_file[:-4] if args.out_file.endswith('.pth') else args.out_file
    tmp = f'{stem}.unhashed.pth'
    save_checkpoint_atomic(checkpoint, tmp)
    try:
        sha = sha256_of(tmp)
        date = '' if args.no_date else '_' + datetime.datetime.now().strftime('%Y%m%d')
        final = f'{stem}{date}-{sha[:8]}.pth'
        os.replace(tmp, final)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    print(f'published {final} (sha256 {sha})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
