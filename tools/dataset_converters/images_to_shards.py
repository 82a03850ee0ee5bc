"""Turn a folder of images into WebDataset ``.tar`` shards plus the index mae-mm reads.

    python tools/dataset_converters/images_to_shards.py data/imagenet/train data/in1k_shards \\
        --shard-size 1GB --verify

writes ``DST/shard-000000.tar``, ``DST/shard-000001.tar``, ... and ``DST/index.json``; train on
them with ``train_dataloader.dataset=dict(type='WebDatasetShards', data_root=DST, ...)``.

- Every image under SRC (recursively, ImageNet's class folders included; the folder scan of
  ``ImageFolder``, hidden files skipped) becomes one tar member named by its path relative to
  SRC, in the same sorted order, with the file's bytes unchanged (unless ``--max-side``).
- A shard is closed before the member that would take it past ``--shard-size``.
- Resumable: a shard is written under ``.tar.tmp`` and renamed when complete, so after an
  interruption the complete shards are kept (their members are checked against SRC) and the
  rest is rewritten. The same command continues the job; the result is the same files.
- ``--verify`` decodes every member as the training loader does and lists the ones it cannot
  decode (training would skip and count them); the exit status is then 1.
- ``--max-side N`` shrinks images whose longer side exceeds N (Pillow, LANCZOS) and re-encodes
  them (JPEG quality 95): this CHANGES THE PIXELS the paper's pipeline sees (its random resized
  crops are taken from the full-resolution images); the index records it.
"""
import argparse
import glob
import io
import json
import os
import os.path as osp
import re
import sys
import tarfile

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# mae_mm (and torch with it) is imported where it is used, so that --help answers at once.
INDEX_NAME = 'index.json'
SHARD_PATTERN = 'shard-{:06d}.tar'
OPTIONS_NAME = '.images_to_shards.json'
_UNITS = {'': 1, 'B': 1, 'KB': 10**3, 'MB': 10**6, 'GB': 10**9, 'TB': 10**12,
          'KIB': 2**10, 'MIB': 2**20, 'GIB': 2**30, 'TIB': 2**40}


def parse_size(text: str) -> int:
    """``'1GB'`` -> 10**9, ``'512MiB'`` -> 512 * 2**20, ``'1000000'`` -> 10**6 (bytes)."""
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*', str(text))
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(
            f'--shard-size {text!r} is not a size: use e.g. 1GB, 500MB or 512MiB')
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size <= 0:
        raise argparse.ArgumentTypeError(f'--shard-size {text!r} must be positive')
    return size


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the images of a folder (recursively) into WebDataset .tar shards '
                    'plus the index that mae_mm.WebDatasetShards reads. Members keep the '
                    'files\' bytes and relative paths; re-running the command resumes an '
                    'interrupted job.')
    parser.add_argument('src', help='folder of images (any depth, e.g. ImageNet train/)')
    parser.add_argument('dst', help='output folder for shard-NNNNNN.tar and index.json')
    parser.add_argument('--shard-size', type=parse_size, default=parse_size('1GB'),
                        help='maximum shard size (default 1GB; KB/MB/GB are powers of 1000, '
                             'KiB/MiB/GiB of 1024); a larger single image gets its own shard')
    parser.add_argument('--max-side', type=int, default=None, metavar='N',
                        help='shrink images whose longer side exceeds N pixels (Pillow LANCZOS, '
                             're-encoded; JPEG quality 95). This CHANGES THE PIXELS the paper '
                             'used (its crops come from full-resolution images); off by '
                             'default, when members are the original bytes')
    parser.add_argument('--verify', action='store_true',
                        help='decode every member as training does and list the failures '
                             '(exit status 1 if any)')
    args = parser.parse_args(argv)
    if args.max_side is not None and args.max_side < 1:
        parser.error(f'--max-side {args.max_side} must be a positive number of pixels')
    return args


def shrink(data: bytes, max_side: int) -> bytes:
    """The image re-encoded with its longer side at most ``max_side``; unchanged if smaller."""
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    if max(img.size) <= max_side:
        return data
    fmt = img.format or 'PNG'
    exif = img.info.get('exif')
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.LANCZOS)
    out = io.BytesIO()
    kwargs = dict(quality=95) if fmt == 'JPEG' else {}
    if exif:
        kwargs['exif'] = exif
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def member_size(nbytes: int) -> int:
    """Bytes a member takes in a tar: a 512-byte header and its data padded to 512."""
    return 512 + -(-nbytes // 512) * 512


def complete_shards(dst: str, files: list) -> list:
    """The complete shards from an earlier run, checked against ``files``; later or partial
    shard files are removed (they will be rewritten)."""
    from mae_mm.datasets.webdataset_shards import tar_members
    for tmp in glob.glob(osp.join(dst, 'shard-*.tar.tmp')):
        os.remove(tmp)
    kept, pos = [], 0
    while osp.isfile(osp.join(dst, SHARD_PATTERN.format(len(kept)))):
        path = osp.join(dst, SHARD_PATTERN.format(len(kept)))
        try:
            names = [name for name, _, _ in tar_members(path)]
        except tarfile.TarError:
            break  # unreadable: rewritten from here
        if not names or names != files[pos:pos + len(names)]:
            sys.exit(f'error: {path} holds other images than {len(names)} files of SRC from '
                     f'number {pos}: SRC changed since the shards were written; write to an '
                     f'empty DST (or delete DST)')
        kept.append(path)
        pos += len(names)
    for stale in glob.glob(osp.join(dst, 'shard-*.tar')):
        if stale not in kept:
            os.remove(stale)
    return kept


def write_shards(args: argparse.Namespace) -> list:
    """Write (or complete) the shards; returns their paths in order."""
    from mmengine.utils import ProgressBar

    from mae_mm.datasets.image_folder import IMG_EXTENSIONS, scan_images
    from mae_mm.datasets.webdataset_shards import index_shards, tar_members
    src, dst = osp.abspath(args.src), osp.abspath(args.dst)
    if not osp.isdir(src):
        sys.exit(f'error: SRC {args.src!r} is not a folder: give the folder of images')
    files = scan_images(src, IMG_EXTENSIONS)
    if not files:
        sys.exit(f'error: no images with extensions {IMG_EXTENSIONS} under {args.src!r}: give '
                 f'a folder of images')
    os.makedirs(dst, exist_ok=True)
    options = dict(source=src, shard_size=args.shard_size, max_side=args.max_side,
                   num_images=len(files))
    options_path = osp.join(dst, OPTIONS_NAME)
    if osp.isfile(options_path):
        with open(options_path, encoding='utf-8') as f:
            before = json.load(f)
        if before != options:
            sys.exit(f'error: {dst} was written with {before}, not {options}: write to an empty '
                     f'DST (or delete DST) to change SRC or the options')
    else:
        with open(options_path, 'w', encoding='utf-8') as f:
            json.dump(options, f)
    shards = complete_shards(dst, files)
    pos = sum(len(tar_members(p)) for p in shards)
    if pos:
        print(f'resuming: {len(shards)} complete shard(s) with {pos} images kept')
    bar = ProgressBar(len(files) - pos) if pos < len(files) else None
    tar, size, tmp_path = None, 0, None
    while pos < len(files):
        name = files[pos]
        path = osp.join(src, name)
        with open(path, 'rb') as f:
            data = f.read()
        if args.max_side:
            try:
                data = shrink(data, args.max_side)
            except Exception as err:  # unreadable image: kept as is, --verify lists it
                print(f'\nwarning: cannot resize {path}: {type(err).__name__}: {err}; '
                      f'stored unchanged')
        need = member_size(len(data))
        if tar is not None and size + need + 1024 > args.shard_size:
            tar.close()
            os.replace(tmp_path, shards[-1])
            tar = None
        if tar is None:
            shards.append(osp.join(dst, SHARD_PATTERN.format(len(shards))))
            tmp_path = shards[-1] + '.tmp'
            tar, size = tarfile.open(tmp_path, 'w', format=tarfile.PAX_FORMAT), 0
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, int(os.stat(path).st_mtime)
        tar.addfile(info, io.BytesIO(data))
        size += need
        pos += 1
        bar.update()
    if tar is not None:
        tar.close()
        os.replace(tmp_path, shards[-1])
    if bar is not None:
        print()
    index_shards(shards, osp.join(dst, INDEX_NAME), IMG_EXTENSIONS, source=src,
                 max_side=args.max_side, shard_size=args.shard_size)
    return shards


def verify(shards: list) -> list:
    """``[(shard#member, reason)]`` for the members the training loader cannot decode."""
    from mmengine.utils import ProgressBar

    from mae_mm.datasets.transforms.loading import LoadImageSafe
    from mae_mm.datasets.webdataset_shards import tar_members
    loader = LoadImageSafe(on_error='raise')
    tables = [(path, tar_members(path)) for path in shards]
    bar = ProgressBar(sum(len(members) for _, members in tables))
    failed = []
    for path, members in tables:
        with open(path, 'rb') as f:
            for name, offset, nbytes in members:
                f.seek(offset)
                try:
                    loader._decode(f'{path}#{name}', f.read(nbytes))
                except OSError as err:
                    failed.append((f'{path}#{name}', str(err)))
                bar.update()
    print()
    return failed


def main(argv=None) -> int:
    args = parse_args(argv)
    shards = write_shards(args)
    with open(osp.join(args.dst, INDEX_NAME), encoding='utf-8') as f:
        count = sum(s['nsamples'] for s in json.load(f)['shardlist'])
    print(f'{count} images in {len(shards)} shard(s) under {args.dst}; index: '
          f'{osp.join(args.dst, INDEX_NAME)}')
    if args.verify:
        failed = verify(shards)
        for member, reason in failed[:20]:
            print(f'cannot decode {member}: {reason}')
        if failed:
            print(f'{len(failed)} of {count} members cannot be decoded (training skips and '
                  f'counts them): replace those files in SRC, delete DST and re-run')
            return 1
        print(f'verified: all {count} members decode')
    return 0


if __name__ == '__main__':
    sys.exit(main())
