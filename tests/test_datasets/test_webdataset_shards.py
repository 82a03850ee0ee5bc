"""WebDataset shards: the writer (tools/dataset_converters/images_to_shards.py) and the map-style
``WebDatasetShards`` data set, checked against Python's ``tarfile``, the ``webdataset`` reader
and the same images read as a folder by the real Runner."""
import hashlib
import importlib.util
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.hooks import Hook

from mae_mm.datasets import WebDatasetShards, scan_images, skipped_image_count
from mae_mm.datasets import webdataset_shards
from mae_mm.datasets.image_folder import IMG_EXTENSIONS
from mae_mm.registry import DATASETS
from tests.conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    'images_to_shards', osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'images_to_shards.py'))
images_to_shards = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(images_to_shards)

QUICKSTART = osp.join(REPO_ROOT, 'configs', 'quickstart',
                      'mae_vit-tiny-p4_1xb64-1000i_photos-32px.py')


def write(src, dst, *options):
    return images_to_shards.main([str(src), str(dst), *options])


@pytest.fixture(scope='module')
def shards(nested_photos, tmp_path_factory):
    dst = tmp_path_factory.mktemp('shards') / 'out'
    assert write(nested_photos, dst, '--shard-size', '60KB') == 0
    return str(dst)


def test_members_are_the_files_bytes_in_folder_order(nested_photos, shards):
    files = scan_images(nested_photos, IMG_EXTENSIONS)
    paths = sorted(p for p in os.listdir(shards) if p.endswith('.tar'))
    assert len(paths) > 3 and paths[0] == 'shard-000000.tar'
    names, offsets = [], {}
    for path in paths:  # the independent reader: Python's tarfile
        with tarfile.open(osp.join(shards, path)) as tar:
            for member in tar:
                names.append(member.name)
                offsets[member.name] = member.offset_data
                with open(osp.join(nested_photos, member.name), 'rb') as f:
                    assert tar.extractfile(member).read() == f.read()
    assert names == files and any('/' in n for n in names)
    assert images_to_shards.INDEX_NAME == webdataset_shards.INDEX_NAME  # the tool skips the import
    ds = WebDatasetShards(data_root=shards)
    assert len(ds) == len(files) == 64
    for i, name in enumerate(files):
        info = ds.get_data_info(i)
        assert info['img_path'].endswith(f'.tar#{name}') and info['offset'] == offsets[name]
        with open(osp.join(nested_photos, name), 'rb') as f:
            assert ds.prepare_data(i)['img_bytes'] == f.read()
    for path in paths:  # the size limit holds (tar pads the archive to 10 KiB records)
        assert osp.getsize(osp.join(shards, path)) <= 60_000 + 10240


def test_the_webdataset_package_reads_the_shards(nested_photos, shards):
    wds = pytest.importorskip('webdataset')
    with open(osp.join(shards, 'index.json')) as f:
        index = json.load(f)
    urls = [osp.join(shards, s['url']) for s in index['shardlist']]
    seen = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        seen[sample['__key__']] = sample['jpg']
    files = scan_images(nested_photos, IMG_EXTENSIONS)
    assert sorted(seen) == sorted(f[:-len('.jpg')] for f in files)
    assert sum(s['nsamples'] for s in index['shardlist']) == len(files)
    for name in files:
        with open(osp.join(nested_photos, name), 'rb') as f:
            assert seen[name[:-len('.jpg')]] == f.read()


def test_the_index_is_a_wids_shard_list(nested_photos, shards, tmp_path, monkeypatch):
    """``wids`` (webdataset's indexed reader) reads the index: same samples, same order."""
    wids = pytest.importorskip('wids')
    monkeypatch.setenv('WIDS_CACHE', str(tmp_path))  # wids links local shards into its cache
    reader = wids.ShardListDataset(osp.join(shards, 'index.json'), transformations=[])
    files = scan_images(nested_photos, IMG_EXTENSIONS)
    assert len(reader) == len(files)
    for i, name in enumerate(files):
        sample = reader[i]
        assert sample['__key__'] == name[:-len('.jpg')]
        with open(osp.join(nested_photos, name), 'rb') as f:
            assert sample['.jpg'].read() == f.read()


def test_shards_of_webdatasets_writer_are_indexed_and_read(photo_folder, tmp_path):
    wds = pytest.importorskip('webdataset')
    names = sorted(os.listdir(photo_folder))[:5]
    with wds.TarWriter(str(tmp_path / 'their-0.tar')) as sink:
        for name in names:
            with open(osp.join(photo_folder, name), 'rb') as f:
                sink.write({'__key__': name[:-4], 'jpg': f.read(), 'txt': 'a caption'})
    webdataset_shards.index_shards([str(tmp_path / 'their-0.tar')], str(tmp_path / 'index.json'))
    ds = WebDatasetShards(data_root=str(tmp_path), pipeline=[dict(type='LoadImageSafe')])
    assert len(ds) == 5  # the images; the captions are not samples
    for i, name in enumerate(names):
        assert ds.get_data_info(i)['img_path'].endswith(f'their-0.tar#{name}')
        with open(osp.join(photo_folder, name), 'rb') as f:
            assert ds.read_bytes(ds.get_data_info(i)) == f.read()
        assert ds[i]['img'].shape == (96, 96, 3)


class _Digest:
    """A picklable pipeline step: the sample's name and a digest of the bytes it was given."""

    def __call__(self, results):
        return dict(img_path=str(results['img_path']),
                    md5=hashlib.md5(results['img_bytes']).hexdigest())


@pytest.mark.parametrize('num_workers', [0, 2])
@pytest.mark.parametrize('world_size', [1, 2, 3])
def test_every_sample_once_per_epoch(shards, nested_photos, monkeypatch, world_size,
                                     num_workers):
    ds = WebDatasetShards(data_root=shards, pipeline=[_Digest()])
    expected = {}
    for i, name in enumerate(scan_images(nested_photos, IMG_EXTENSIONS)):
        with open(osp.join(nested_photos, name), 'rb') as f:
            expected[ds.get_data_info(i)['img_path']] = hashlib.md5(f.read()).hexdigest()
    for epoch in (0, 1):
        seen = []
        for rank in range(world_size):
            # the rank and world size a distributed launch gives the sampler
            monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info',
                                lambda rank=rank: (rank, world_size))
            sampler = DefaultSampler(ds, shuffle=True, seed=0, round_up=False)
            sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(ds, batch_size=5, sampler=sampler,
                                                 num_workers=num_workers,
                                                 collate_fn=pseudo_collate)
            for batch in loader:
                seen += list(zip(batch['img_path'], batch['md5']))
        assert sorted(seen) == sorted(expected.items())  # each sample once, its own bytes


def test_truncated_member_is_skipped_and_counted(photo_folder, tmp_path, mmengine_logs, capsys):
    src = tmp_path / 'src'
    src.mkdir()
    for name in sorted(os.listdir(photo_folder))[:4]:
        shutil.copy2(osp.join(photo_folder, name), src / name)
    with open(src / 'img_000.jpg', 'rb') as f:
        data = f.read()
    (src / 'cut.jpg').write_bytes(data[:len(data) // 2])  # a JPEG cut in half
    assert write(src, tmp_path / 'dst') == 0
    ds = DATASETS.build(dict(type='WebDatasetShards', data_root=str(tmp_path / 'dst'),
                             pipeline=[dict(type='LoadImageSafe')]))
    assert [ds.get_data_info(i)['member'] for i in range(len(ds))][0] == 'cut.jpg'
    assert ds.prepare_data(0) is None and skipped_image_count() == 1  # skipped, counted
    out = ds[0]  # in training: another (random) sample instead
    assert out['img'].shape == (96, 96, 3) and not out['img_path'].endswith('#cut.jpg')
    assert any('shard-000000.tar#cut.jpg' in m and 'truncated' in m for m in mmengine_logs)
    capsys.readouterr()
    assert write(src, tmp_path / 'dst', '--verify') == 1  # the verification pass lists it
    assert 'cannot decode ' in capsys.readouterr().out


def test_missing_index_or_shard_one_line_errors(shards, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        WebDatasetShards(data_root=str(tmp_path))
    msg = str(err.value)
    assert '\n' not in msg and osp.join(str(tmp_path), 'index.json') in msg
    assert 'train_dataloader.dataset.data_root' in msg and 'images_to_shards.py' in msg
    with pytest.raises(ValueError, match='with_label=False') as err:
        WebDatasetShards(data_root=shards, with_label=True)
    assert '\n' not in str(err.value)
    # ImageFolder's data_prefix: the shards' folder under data_root
    assert len(WebDatasetShards(data_root=osp.dirname(shards), data_prefix='out')) == 64
    copy = tmp_path / 'copy'
    shutil.copytree(shards, copy)
    os.remove(copy / 'shard-000002.tar')
    with pytest.raises(FileNotFoundError) as err:
        WebDatasetShards(data_root=str(copy))
    msg = str(err.value)
    assert '\n' not in msg and str(copy / 'shard-000002.tar') in msg
    assert 'images_to_shards.py' in msg and 'resumes' in msg
    with open(copy / 'shard-000001.tar', 'ab') as f:  # a shard changed after indexing
        f.write(b'\0' * 512)
    shutil.copy(osp.join(shards, 'shard-000002.tar'), copy / 'shard-000002.tar')
    with pytest.raises(ValueError, match='stale') as err:
        WebDatasetShards(data_root=str(copy))
    assert '\n' not in str(err.value)


def _contents(folder):
    return {name: open(osp.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))
            if name.endswith('.tar')}


def test_the_writer_resumes_after_an_interruption(nested_photos, shards, tmp_path, capsys):
    dst = tmp_path / 'dst'
    shutil.copytree(shards, dst)
    full = _contents(shards)
    last = sorted(full)[-1]
    os.remove(dst / last)  # killed while writing the last shard ...
    os.remove(dst / 'index.json')
    (dst / f'{last}.tmp').write_bytes(full[last][:3000])  # ... which was half written
    os.remove(dst / 'shard-000002.tar')  # and a gap: everything from there is rewritten
    capsys.readouterr()
    assert write(nested_photos, dst, '--shard-size', '60KB') == 0
    assert 'resuming: 2 complete shard(s)' in capsys.readouterr().out
    assert _contents(dst) == full and not any(n.endswith('.tmp') for n in os.listdir(dst))
    with open(dst / 'index.json') as f, open(osp.join(shards, 'index.json')) as g:
        assert json.load(f)['shardlist'] == json.load(g)['shardlist']
    with pytest.raises(SystemExit, match='empty DST'):  # other options: not mixed in
        write(nested_photos, dst, '--shard-size', '80KB')


def test_max_side_shrinks_and_is_recorded(photo_folder, tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    shutil.copy2(osp.join(photo_folder, 'img_000.jpg'), src / 'a.jpg')
    assert write(src, tmp_path / 'dst', '--max-side', '48', '--verify') == 0
    ds = WebDatasetShards(data_root=str(tmp_path / 'dst'),
                          pipeline=[dict(type='LoadImageSafe')])
    assert ds[0]['img'].shape == (48, 48, 3)
    with open(tmp_path / 'dst' / 'index.json') as f:
        assert json.load(f)['mae_mm']['max_side'] == 48
    assert 'CHANGES THE PIXELS' in images_to_shards.__doc__
    out = subprocess.run([sys.executable, images_to_shards.__file__, '--help'],
                         capture_output=True, text=True, check=True).stdout
    assert 'CHANGES THE PIXELS' in ' '.join(out.split())


class _RecordLoss(Hook):
    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses.append(float(outputs['loss'].detach()))


def _quickstart_run(dataset, work_dir, max_iters=2, **overrides):
    """The quick-start config on ``dataset`` (a few iterations, batch 8); returns the losses."""
    cfg = Config.fromfile(QUICKSTART)
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_iters': max_iters,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 100,
        'randomness': dict(seed=0),
        **{f'train_dataloader.dataset.{k}': v for k, v in dataset.items()},
        **overrides,
    })
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', T_max=max_iters, by_epoch=False)]
    return train_recording_losses(cfg)


def train_recording_losses(cfg) -> list:
    """Train ``cfg`` with mae-mm's runner; the loss of every iteration."""
    from mae_mm.engine import build_runner
    runner = build_runner(cfg)
    record = _RecordLoss()
    runner.register_hook(record)
    runner.train()
    return record.losses


def test_quickstart_pretraining_on_shards_equals_the_folder(photo_folder, tmp_path):
    assert write(photo_folder, tmp_path / 'shards', '--shard-size', '100KB') == 0
    folder = _quickstart_run(dict(data_root=photo_folder), tmp_path / 'w_folder')
    # the switch to shards: type and data_root, as --cfg-options would change them
    sharded = _quickstart_run(dict(type='WebDatasetShards', data_root=str(tmp_path / 'shards')),
                              tmp_path / 'w_shards')
    assert len(folder) == 2 and folder == sharded
    assert skipped_image_count() == 0  # every sample decoded from the shards, none refetched


def _state(path):
    from mae_mm.utils.compat import load_checkpoint_file
    ckpt = load_checkpoint_file(str(path), map_location='cpu')
    return ckpt['meta']['iter'], ckpt['state_dict'], ckpt['optimizer']['state']


def test_a_run_on_shards_resumes_exactly_like_the_folder_run(photo_folder, tmp_path):
    """The quick start's loop (InfiniteSampler) stopped after iteration 3 of 6 and resumed on
    the shards ends with the weights and optimizer state of the uninterrupted folder run."""
    assert write(photo_folder, tmp_path / 'shards', '--shard-size', '100KB') == 0
    shards = dict(type='WebDatasetShards', data_root=str(tmp_path / 'shards'))
    ckpt = {'default_hooks.checkpoint.interval': 3}
    folder = _quickstart_run(dict(data_root=photo_folder), tmp_path / 'folder', 6, **ckpt)
    (tmp_path / 'resumed').mkdir()
    shutil.copy(tmp_path / 'folder' / 'iter_3.pth', tmp_path / 'resumed')
    resumed = _quickstart_run(shards, tmp_path / 'resumed', 6, resume=True, **ckpt)
    assert resumed == folder[3:]
    expected, actual = _state(tmp_path / 'folder' / 'iter_6.pth'), _state(
        tmp_path / 'resumed' / 'iter_6.pth')
    assert expected[0] == actual[0] == 6
    for key, value in expected[1].items():
        assert torch.equal(value, actual[1][key]), key
    for index, state in expected[2].items():
        for name, value in state.items():
            assert torch.equal(value, actual[2][index][name]), (index, name)
