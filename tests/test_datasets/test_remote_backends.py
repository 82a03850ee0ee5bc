"""LMDB and HTTP sources through mmengine's file backends: ``ImageFolder`` with an ``ann_file``
of relative paths and ``backend_args`` in the loading transform, checked against the same real
photos read from the folder (bytes, decoded arrays, quick-start crops, Runner losses)."""
import functools
import http.server
import importlib.util
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mae_mm.datasets import ImageFolder, scan_images, skipped_image_count
from mae_mm.datasets.image_folder import IMG_EXTENSIONS
from tests.conftest import REPO_ROOT

lmdb = pytest.importorskip('lmdb')  # requirements/optional.txt

_spec = importlib.util.spec_from_file_location(
    'images_to_lmdb', osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'images_to_lmdb.py'))
images_to_lmdb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(images_to_lmdb)

QUICKSTART = osp.join(REPO_ROOT, 'configs', 'quickstart',
                      'mae_vit-tiny-p4_1xb64-1000i_photos-32px.py')
DOC = osp.join(REPO_ROOT, 'docs', 'pretrain_custom_data.md')


@pytest.fixture(scope='module')
def db(nested_photos, tmp_path_factory):
    dst = str(tmp_path_factory.mktemp('lmdb') / 'photos.lmdb')
    assert images_to_lmdb.main([nested_photos, dst]) == 0
    return dst


@pytest.fixture(scope='module')
def server(nested_photos, db):
    """``http.server`` on 127.0.0.1 serving the folder (plus the key list) from a thread."""
    shutil.copy(osp.join(db, 'keys.txt'), osp.join(nested_photos, 'keys.txt'))  # not an image

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Quiet, directory=nested_photos))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()
    os.remove(osp.join(nested_photos, 'keys.txt'))


def lmdb_args(db):
    return dict(backend='lmdb', db_path=db)


def quickstart_pipeline(backend_args=None):
    pipeline = Config.fromfile(QUICKSTART).train_dataloader.dataset.pipeline
    pipeline[0]['backend_args'] = backend_args
    return pipeline


def sources(nested_photos, db, server):
    """The same images as (dataset kwargs, backend_args): folder, LMDB, HTTP."""
    keys = osp.join(db, 'keys.txt')
    return {
        'folder': (dict(data_root=nested_photos), None),
        'lmdb': (dict(data_root='', ann_file=keys), lmdb_args(db)),
        'http': (dict(data_root=server, ann_file='keys.txt'), None),  # key list from the server
        'http_local_keys': (dict(data_root=server + '/', ann_file=keys), None),
    }


def test_the_database_holds_the_files_bytes_under_their_relative_paths(nested_photos, db):
    files = scan_images(nested_photos, IMG_EXTENSIONS)
    assert any('/deeper/' in f for f in files) and len(files) == 64
    with open(osp.join(db, 'keys.txt')) as f:
        assert f.read().split('\n') == files + ['']  # the folder's order
    env = lmdb.open(db, readonly=True, lock=False)
    with env.begin() as txn:
        assert txn.stat()['entries'] == 64
        for rel in files:
            with open(osp.join(nested_photos, rel), 'rb') as f:
                assert txn.get(rel.encode()) == f.read(), rel
    env.close()


def test_with_label_writes_imagefolder_class_ids(nested_photos, tmp_path):
    labelled = tmp_path / 'labelled'
    for sub in ('n01', 'n02'):
        shutil.copytree(osp.join(nested_photos, sub), labelled / sub)
    assert images_to_lmdb.main([str(labelled), str(tmp_path / 'db'), '--with-label']) == 0
    from_db = ImageFolder(data_root='', ann_file=str(tmp_path / 'db' / 'keys.txt'),
                          with_label=True)
    folder = ImageFolder(data_root=str(labelled), with_label=True)
    assert [d['img_path'] for d in from_db] == [osp.relpath(d['img_path'], labelled)
                                                for d in folder]
    assert list(from_db.get_gt_labels()) == list(folder.get_gt_labels())


def test_converter_refuses_an_existing_dst_and_non_ascii_names(nested_photos, db, tmp_path,
                                                               capsys):
    assert images_to_lmdb.main([nested_photos, db]) == 2
    assert 'exists' in capsys.readouterr().err
    (tmp_path / 'src').mkdir()
    shutil.copy(osp.join(nested_photos, 'img_002.jpg'), tmp_path / 'src' / 'caf\u00e9.jpg')
    assert images_to_lmdb.main([str(tmp_path / 'src'), str(tmp_path / 'db')]) == 2
    err = capsys.readouterr().err
    assert 'caf' in err and 'rename' in err and len(err.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, images_to_lmdb.__file__, '--help'],
                         capture_output=True, text=True, check=True).stdout
    assert 'keys.txt' in out


def test_img_paths_are_the_keys_and_urls(nested_photos, db, server):
    files = scan_images(nested_photos, IMG_EXTENSIONS)
    srcs = sources(nested_photos, db, server)
    paths = {name: [d['img_path'] for d in ImageFolder(**kw)] for name, (kw, _) in srcs.items()}
    assert paths['folder'] == [osp.join(nested_photos, f) for f in files]
    assert paths['lmdb'] == files
    assert paths['http'] == paths['http_local_keys'] == [f'{server}/{f}' for f in files]


@pytest.mark.parametrize('name', ['lmdb', 'http', 'http_local_keys'])
def test_same_images_and_quickstart_crops_as_the_folder(nested_photos, db, server, name):
    srcs = sources(nested_photos, db, server)
    (folder_kw, _), (kw, backend_args) = srcs['folder'], srcs[name]
    # full decode (LoadImageSafe): the same arrays, in the same order
    full = [ImageFolder(**k, pipeline=[dict(type='LoadImageSafe', backend_args=b)])
            for k, b in ((folder_kw, None), (kw, backend_args))]
    assert len(full[0]) == len(full[1]) == 64
    for i in range(64):
        np.testing.assert_array_equal(full[0][i]['img'], full[1][i]['img'])
    # the quick-start pipeline (FastRandomResizedCrop with backend_args), same seeds
    quick = [ImageFolder(**k, pipeline=quickstart_pipeline(b))
             for k, b in ((folder_kw, None), (kw, backend_args))]
    for i in range(64):
        outs = []
        for ds in quick:
            np.random.seed(i)
            outs.append(ds[i]['inputs'])
        assert torch.equal(*outs), i
    assert skipped_image_count() == 0


def _quickstart_losses(dataset, work_dir, backend_args=None):
    from mae_mm.engine import build_runner
    from tests.test_datasets.test_webdataset_shards import _RecordLoss
    cfg = Config.fromfile(QUICKSTART)
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_iters': 2,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 100,
        'randomness': dict(seed=0),
        **{f'train_dataloader.dataset.{k}': v for k, v in dataset.items()},
    })
    cfg.train_dataloader.dataset.pipeline[0]['backend_args'] = backend_args
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=False)]
    runner = build_runner(cfg)
    record = _RecordLoss()
    runner.register_hook(record)
    runner.train()
    return record.losses


def test_quickstart_pretraining_from_lmdb_and_http_equals_the_folder(nested_photos, db, server,
                                                                     tmp_path):
    srcs = sources(nested_photos, db, server)
    folder = _quickstart_losses(*srcs['folder'][:1], tmp_path / 'folder')
    from_lmdb = _quickstart_losses(srcs['lmdb'][0], tmp_path / 'lmdb', srcs['lmdb'][1])
    from_http = _quickstart_losses(srcs['http'][0], tmp_path / 'http')
    assert len(folder) == 2 and folder == from_lmdb == from_http
    assert skipped_image_count() == 0


def test_missing_url_is_skipped_and_counted_or_raises_one_line(server, tmp_path, mmengine_logs):
    keys = tmp_path / 'keys.txt'
    keys.write_text('img_002.jpg\nno_such.jpg\n')
    ds = ImageFolder(data_root=server, ann_file=str(keys), pipeline=quickstart_pipeline())
    assert ds.get_data_info(1)['img_path'] == f'{server}/no_such.jpg'
    assert ds.prepare_data(1) is None and skipped_image_count() == 1
    assert any(f'{server}/no_such.jpg' in m and 'HTTPError' in m for m in mmengine_logs)
    assert ds[1]['inputs'].shape == (3, 32, 32)  # refetched: the other image
    raising = quickstart_pipeline()
    raising[0]['on_error'] = 'raise'
    ds = ImageFolder(data_root=server, ann_file=str(keys), pipeline=raising)
    with pytest.raises(OSError) as err:
        ds[1]
    assert 'no_such.jpg' in str(err.value) and 'replace or remove' in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    # a server that is not there: connection refused, one line naming the URL
    dead = ImageFolder(data_root='http://127.0.0.1:9', ann_file=str(keys), pipeline=raising)
    with pytest.raises(OSError, match=r"http://127\.0\.0\.1:9/img_002\.jpg.*URLError"):
        dead[0]


def test_missing_lmdb_key_is_skipped_and_counted_or_raises_one_line(db, tmp_path, mmengine_logs):
    keys = tmp_path / 'keys.txt'
    keys.write_text('img_002.jpg\nno_such.jpg\n')
    ds = ImageFolder(data_root='', ann_file=str(keys), pipeline=quickstart_pipeline(lmdb_args(db)))
    assert ds.prepare_data(1) is None and skipped_image_count() == 1
    assert any('no_such.jpg' in m for m in mmengine_logs)
    raising = quickstart_pipeline(lmdb_args(db))
    raising[0]['on_error'] = 'raise'
    with pytest.raises(OSError, match='no_such.jpg') as err:
        ImageFolder(data_root='', ann_file=str(keys), pipeline=raising)[1]
    assert len(str(err.value).splitlines()) == 1


def test_configuration_errors_name_the_field(server, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'not a local folder.*ann_file') as err:
        ImageFolder(data_root=server)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(FileNotFoundError, match=r'not a local folder.*ann_file'):
        ImageFolder(data_root='')
    with pytest.raises(FileNotFoundError, match=r'missing\.txt.*HTTPError.*fix '
                       r'train_dataloader\.dataset\.ann_file'):
        ImageFolder(data_root=server, ann_file='missing.txt')


def _doc_section_blocks():
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    section = text.split('## LMDB and HTTP/S3 sources', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, re.S)


def test_the_documented_configs_read_the_images(nested_photos, db, server, tmp_path):
    """The docs' config blocks, with their example paths pointed at the test's LMDB and server,
    load through ``Config.fromfile``, keep the recipe's pipeline and read the folder's images."""
    blocks = _doc_section_blocks()
    assert len(blocks) == 2
    replace = {"'data/photos.lmdb": f"'{db}", 'http://my-server:8000/photos': server,
               "'../mae/": f"'{REPO_ROOT}/configs/mae/"}
    folder = ImageFolder(data_root=nested_photos, pipeline=[dict(type='LoadImageSafe')])
    recipe = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'mae',
                                      'mae_vit-base-p16_8xb512-amp-coslr-800e_in1k.py'))
    for i, block in enumerate(blocks):
        for old, new in replace.items():
            block = block.replace(old, new)
        path = tmp_path / f'doc_{i}.py'
        path.write_text(block)
        cfg = Config.fromfile(str(path)).train_dataloader.dataset
        backend_args = cfg.pipeline[0].pop('backend_args', None)
        assert cfg.pipeline == recipe.train_dataloader.dataset.pipeline
        assert backend_args == (lmdb_args(db) if i == 0 else None)
        cfg.pipeline = [dict(type='LoadImageSafe', backend_args=backend_args)]
        assert cfg.pop('type') == 'ImageFolder'
        ds = ImageFolder(**cfg)
        assert len(ds) == 64
        for j in (0, 31, 63):
            np.testing.assert_array_equal(ds[j]['img'], folder[j]['img'])


def test_the_documented_key_list_one_liner(nested_photos, db):
    section = open(DOC, encoding='utf-8').read().split('## LMDB and HTTP/S3 sources', 1)[1]
    line = re.search(r'`(python -c "from mae_mm.*?") > ', section).group(1)
    line = line.replace('/data/my_images', nested_photos).replace('python', sys.executable, 1)
    out = subprocess.run(line, shell=True, cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    with open(osp.join(db, 'keys.txt')) as f:
        assert out == f.read()


def test_lmdb_in_forked_dataloader_workers(nested_photos, db):
    """Two forked data-loader workers read the LMDB, also after the training process opened
    it (mmengine's backend singleton), as the folder: same images in the same order."""
    from torch.utils.data import DataLoader
    kw, backend_args = sources(nested_photos, db, 'http://unused')['lmdb']
    pipeline = [dict(type='LoadImageSafe', backend_args=backend_args),
                dict(type='mmpretrain.PackInputs')]
    ds = ImageFolder(**kw, pipeline=pipeline)
    first = ds[0]['inputs']  # opens the environment in this process, before the fork
    folder = ImageFolder(data_root=nested_photos, pipeline=[
        dict(type='LoadImageSafe'), dict(type='mmpretrain.PackInputs')])
    loaders = [DataLoader(d, batch_size=8, num_workers=2, collate_fn=lambda b: b,
                          multiprocessing_context='fork') for d in (ds, folder)]
    got, want = [[s['inputs'] for b in loader for s in b] for loader in loaders]
    assert len(got) == len(want) == 64 and torch.equal(got[0], first)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
