"""Put the images of a folder into an LMDB database that mmengine's ``LmdbBackend`` reads.

    python tools/dataset_converters/images_to_lmdb.py data/imagenet/train data/in1k_train.lmdb

writes the LMDB environment ``DST/data.mdb`` and the key list ``DST/keys.txt``. Train from it
with the folder's data set and the backend in the loading transform:

    train_dataloader = dict(dataset=dict(
        data_root='', data_prefix='', ann_file='data/in1k_train.lmdb/keys.txt',
        pipeline=[dict(type='FastRandomResizedCrop', scale=224, crop_ratio_range=(0.2, 1.0),
                       interpolation='bicubic',
                       backend_args=dict(backend='lmdb', db_path='data/in1k_train.lmdb')),
                  ...]))

- Every image under SRC (recursively, ImageNet's class folders included; the folder scan of
  ``ImageFolder``, hidden files skipped) is stored under its path relative to SRC (``/``
  separators) as the key, with the file's bytes unchanged; ``keys.txt`` lists the keys in the
  folder's sorted order, so the data set has the folder's samples in the folder's order.
- ``LmdbBackend`` encodes keys as ASCII: a path with other characters stops the conversion
  with its name (rename the file).
- ``--with-label`` adds each image's class index (its top folder among the sorted class
  folders, as ``ImageFolder(with_label=True)``) to ``keys.txt``: use ``with_label=True``.
- An existing DST is refused (delete it first): the database is written in one go.
"""
import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

KEYS_NAME = 'keys.txt'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Store the images of a folder (recursively) in an LMDB database, keyed by '
                    'their relative paths, plus DST/keys.txt listing the keys (the ann_file of '
                    'mae_mm.ImageFolder with data_root=\'\').')
    parser.add_argument('src', help='folder of images (ImageNet layout allowed)')
    parser.add_argument('dst', help='LMDB folder to create')
    parser.add_argument('--with-label', action='store_true',
                        help='append the class index (top folder) to every line of keys.txt')
    parser.add_argument('--commit-every', type=int, default=1000,
                        help='images per write transaction (default 1000)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import lmdb

    from mae_mm.datasets.image_folder import IMG_EXTENSIONS, scan_images
    if not osp.isdir(args.src):
        print(f'error: SRC {args.src!r} is not a folder: give a folder of images',
              file=sys.stderr)
        return 2
    if osp.exists(args.dst):
        print(f'error: DST {args.dst!r} exists: delete it or choose another path',
              file=sys.stderr)
        return 2
    files = scan_images(args.src, IMG_EXTENSIONS)
    if not files:
        print(f'error: no images with extensions {IMG_EXTENSIONS} under {args.src!r}',
              file=sys.stderr)
        return 2
    for rel in files:
        if not rel.isascii() or ' ' in rel:
            print(f'error: {rel!r} is not an ASCII path without spaces, which LmdbBackend keys '
                  f'and keys.txt need: rename the file', file=sys.stderr)
            return 2
    class_ids = {name: i for i, name in
                 enumerate(sorted({rel.split('/')[0] for rel in files if '/' in rel}))}
    if args.with_label and any('/' not in rel for rel in files):
        print(f'error: --with-label needs every image inside a class folder of {args.src!r}',
              file=sys.stderr)
        return 2
    total = sum(osp.getsize(osp.join(args.src, rel)) for rel in files)
    os.makedirs(args.dst)
    # map_size is the most the database may grow to; the file only takes what is written.
    env = lmdb.open(args.dst, map_size=max(2 * total + len(files) * 4096, 2**24))
    txn = env.begin(write=True)
    for i, rel in enumerate(files, 1):
        with open(osp.join(args.src, rel), 'rb') as f:
            txn.put(rel.encode('ascii'), f.read())
        if i % args.commit_every == 0 or i == len(files):
            txn.commit()
            print(f'\r{i}/{len(files)} images', end='', file=sys.stderr, flush=True)
            if i < len(files):
                txn = env.begin(write=True)
    print(file=sys.stderr)
    env.close()
    with open(osp.join(args.dst, KEYS_NAME), 'w', encoding='utf-8') as f:
        for rel in files:
            label = f' {class_ids[rel.split("/")[0]]}' if args.with_label else ''
            f.write(f'{rel}{label}\n')
    print(f'{len(files)} images ({total / 1e6:.1f} MB) -> {args.dst} '
          f'(keys in {osp.join(args.dst, KEYS_NAME)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
