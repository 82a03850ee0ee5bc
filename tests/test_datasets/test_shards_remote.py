"""``WebDatasetShards`` on remote shards: over HTTP (one ``Range`` request per member, served by
a local server on 127.0.0.1 that counts requests and bytes) and on another mmengine file backend
(a backend registered here, whose shards are fetched whole once into ``cache_dir``), checked
against the local shards and the folder they were written from."""
import functools
import http.server
import os
import os.path as osp
import re
import shutil
import threading
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.fileio import register_backend
from mmengine.fileio.backends import BaseStorageBackend, backends, prefix_to_backends

from mae_mm.datasets import WebDatasetShards, scan_images, skipped_image_count
from mae_mm.datasets.image_folder import IMG_EXTENSIONS
from tests.conftest import REPO_ROOT
from tests.test_datasets.test_webdataset_shards import _quickstart_run, shards, write  # noqa: F401

DOC = osp.join(REPO_ROOT, 'docs', 'pretrain_custom_data.md')


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` that honours ``Range: bytes=a-b`` (unless the server's
    ``ranges`` is False) and records ``(method, path, Range header, bytes sent)`` per request."""

    def log_message(self, *args):
        pass

    def _record(self, sent):
        self.server.requests.append((self.command, self.path, self.headers.get('Range'), sent))

    def do_HEAD(self):
        self._record(0)
        super().do_HEAD()

    def do_GET(self):
        path = self.translate_path(self.path)
        match = re.fullmatch(r'bytes=(\d+)-(\d+)', self.headers.get('Range') or '')
        if not (self.server.ranges and match and osp.isfile(path)):
            self._record(osp.getsize(path) if osp.isfile(path) else 0)
            return super().do_GET()
        with open(path, 'rb') as f:
            data = f.read()
        start, end = int(match[1]), min(int(match[2]), len(data) - 1)
        self._record(end + 1 - start)  # before the reply: the client may send the next one
        self.send_response(206)
        self.send_header('Content-Range', f'bytes {start}-{end}/{len(data)}')
        self.send_header('Content-Length', str(end + 1 - start))
        self.end_headers()
        self.wfile.write(data[start:end + 1])


@pytest.fixture
def serve():
    """``serve(folder, ranges=True, handler=RangeHandler, **server_attributes)`` -> (URL, list of
    requests); servers stopped after the test."""
    servers = []

    def start(folder, ranges=True, handler=RangeHandler, **attributes):
        httpd = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), functools.partial(handler, directory=str(folder)))
        httpd.ranges, httpd.requests = ranges, []
        for name, value in attributes.items():
            setattr(httpd, name, value)
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(httpd)
        return f'http://127.0.0.1:{httpd.server_address[1]}', httpd.requests

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def expected_bytes(nested_photos):
    files, data = scan_images(nested_photos, IMG_EXTENSIONS), []
    for name in files:
        with open(osp.join(nested_photos, name), 'rb') as f:
            data.append(f.read())
    return files, data


def test_http_members_are_the_files_bytes_one_range_request_each(nested_photos, shards, serve):
    url, requests = serve(shards)
    ds = WebDatasetShards(data_root=url)
    local = WebDatasetShards(data_root=shards)
    n_shards = len(local.shard_paths)
    assert n_shards > 3 and ds.shard_paths == [f'{url}/{osp.basename(p)}'
                                               for p in local.shard_paths]
    # built with the index and one HEAD per shard (existence and size), no shard data
    assert sorted(r[0] for r in requests) == ['GET'] + ['HEAD'] * n_shards
    assert requests[0][1] == '/index.json'
    del requests[:]
    files, data = expected_bytes(nested_photos)
    assert len(ds) == 64
    for i, (name, content) in enumerate(zip(files, data)):
        info = ds.get_data_info(i)
        assert info['img_path'] == f"{url}/{osp.basename(local.shard_paths[info['shard']])}#{name}"
        assert ds.prepare_data(i)['img_bytes'] == content == local.prepare_data(i)['img_bytes']
        method, _, header, sent = requests[i]  # one range request of exactly the member
        assert (method, sent) == ('GET', len(content))
        assert header == f"bytes={info['offset']}-{info['offset'] + len(content) - 1}"
    assert len(requests) == 64
    assert sum(r[3] for r in requests) == sum(map(len, data))  # not the shards' bytes
    assert _read_all(ds, 2) == dict(zip(files, data))  # forked data-loader workers too
    assert skipped_image_count() == 0


def test_http_with_cache_dir_fetches_whole_shards_once(nested_photos, shards, serve, tmp_path):
    url, requests = serve(shards, ranges=False)
    ds = WebDatasetShards(data_root=url, cache_dir=str(tmp_path / 'cache'))
    del requests[:]
    _, data = expected_bytes(nested_photos)
    assert [ds.prepare_data(i)['img_bytes'] for i in range(64)] == data
    assert sorted(r[1] for r in requests) == ['/' + osp.basename(p) for p in ds.shard_paths]
    assert all(r[2] is None for r in requests)  # plain GETs of whole shards


def test_a_server_without_ranges_gives_the_same_bytes_and_warns_once(nested_photos, shards,
                                                                      serve, mmengine_logs):
    url, requests = serve(shards, ranges=False)
    ds = WebDatasetShards(data_root=url)
    _, data = expected_bytes(nested_photos)
    for i, content in enumerate(data):
        assert ds.prepare_data(i)['img_bytes'] == content
    warnings = [m for m in mmengine_logs if 'ignores Range requests' in m]
    assert len(warnings) == 1 and url[len('http://'):] in warnings[0]


class _DirBackend(BaseStorageBackend):
    """``testshards://<path>``: the local file ``<path>`` (slowly: 50 ms per get, so that
    concurrent workers overlap), each get logged in ``<path's folder>/../gets.log`` (shared by
    forked workers); ``get`` of a path in ``FAIL`` raises ``ConnectionError``."""
    FAIL: set = set()

    @staticmethod
    def _path(uri):
        return uri[len('testshards://'):]

    def get(self, filepath):
        path = self._path(filepath)
        with open(osp.join(osp.dirname(osp.dirname(path)), 'gets.log'), 'a') as log:
            log.write(osp.basename(path) + '\n')
        if path in self.FAIL:
            raise ConnectionError(f'connection reset while reading {filepath}')
        time.sleep(0.05)
        with open(path, 'rb') as f:
            return f.read()

    def get_text(self, filepath, encoding='utf-8'):
        return self.get(filepath).decode(encoding)

    def exists(self, filepath):
        return osp.exists(self._path(filepath))


@pytest.fixture
def remote(shards, tmp_path):
    """A copy of the shards on the ``testshards://`` backend; returns (its URI, gets log)."""
    register_backend('testshards', _DirBackend, force=True, prefixes='testshards')
    shutil.copytree(shards, tmp_path / 'store' / 'out')
    yield f'testshards://{tmp_path}/store/out', tmp_path / 'store' / 'gets.log'
    backends.pop('testshards')
    prefix_to_backends.pop('testshards')
    _DirBackend.FAIL.clear()


def _read_all(ds, num_workers):
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, num_workers=num_workers, collate_fn=pseudo_collate,
        sampler=DefaultSampler(ds, shuffle=True, seed=0, round_up=False))
    return {p: b for batch in loader for p, b in zip(batch['member'], batch['img_bytes'])}


def test_other_backends_fetch_each_shard_once_into_the_cache(nested_photos, remote, tmp_path):
    uri, gets = remote
    cache = tmp_path / 'cache'
    first = WebDatasetShards(data_root=uri, cache_dir=str(cache))
    second = WebDatasetShards(data_root=uri, cache_dir=str(cache))
    n_shards = len(first.shard_paths)
    assert first.get_data_info(0)['img_path'].startswith(f'{uri}/shard-000000.tar#')
    files, data = expected_bytes(nested_photos)
    # two data sets, two forked workers each, all reading the shards at once
    assert _read_all(first, 2) == _read_all(second, 2) == dict(zip(files, data))
    fetched = gets.read_text().split()
    assert sorted(fetched) == ['index.json'] * 2 + sorted(osp.basename(p)
                                                          for p in first.shard_paths)
    cached = sorted(os.listdir(cache))
    assert len([c for c in cached if c.endswith('.tar')]) == n_shards
    assert all(c.endswith(('.tar', '.tar.lock')) for c in cached)  # no half-written file


def test_other_backends_need_cache_dir_one_line_error(remote):
    uri, gets = remote
    for lazy in (False, True):  # when the data set is built, before any training
        with pytest.raises(ValueError) as err:
            WebDatasetShards(data_root=uri, lazy_init=lazy)
        msg = str(err.value)
        assert '\n' not in msg and 'train_dataloader.dataset.cache_dir' in msg and uri in msg
    assert not gets.exists()


def test_a_failed_download_is_skipped_and_counted(shards, serve, remote, tmp_path,
                                                  mmengine_logs):
    copy = tmp_path / 'served'
    shutil.copytree(shards, copy)
    url, _ = serve(copy)
    pipeline = [dict(type='LoadImageSafe')]
    over_http = WebDatasetShards(data_root=url, pipeline=pipeline)
    os.remove(copy / 'shard-000000.tar')  # gone after the data set was built: HTTP 404
    assert over_http.prepare_data(0) is None and skipped_image_count() == 1  # counted
    lost = over_http.get_data_info(0)['img_path']
    assert any(lost in m and 'HTTP Error 404' in m for m in mmengine_logs)
    assert over_http[0]['img'].shape == (96, 96, 3)  # refetched: another member
    uri, _ = remote
    cached = WebDatasetShards(data_root=uri, pipeline=pipeline, cache_dir=str(tmp_path / 'c'))
    _DirBackend.FAIL.add(cached.shard_paths[1][len('testshards://'):])
    idx = next(i for i in range(len(cached)) if cached.get_data_info(i)['shard'] == 1)
    before = skipped_image_count()
    assert cached.prepare_data(idx) is None and skipped_image_count() == before + 1
    assert any('ConnectionError' in m and 'shard-000001.tar#' in m for m in mmengine_logs)
    assert cached.prepare_data(0)['img'].shape == (96, 96, 3)


def test_missing_remote_index_or_shard_one_line_errors(shards, serve, remote, tmp_path):
    url, _ = serve(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        WebDatasetShards(data_root=url)
    msg = str(err.value)
    assert '\n' not in msg and f'{url}/index.json' in msg and 'HTTP Error 404' in msg
    assert 'train_dataloader.dataset.data_root' in msg and 'images_to_shards.py' in msg
    shutil.copytree(shards, tmp_path / 'copy')
    os.remove(tmp_path / 'copy' / 'shard-000002.tar')
    with pytest.raises(FileNotFoundError) as err:
        WebDatasetShards(data_root=f'{url}/copy')
    msg = str(err.value)
    assert '\n' not in msg and f'{url}/copy/shard-000002.tar' in msg and 'resumes' in msg
    shutil.copy(osp.join(shards, 'shard-000002.tar'), tmp_path / 'copy')
    with open(tmp_path / 'copy' / 'shard-000001.tar', 'ab') as f:  # changed after indexing
        f.write(b'\0' * 512)
    with pytest.raises(ValueError, match='stale') as err:
        WebDatasetShards(data_root=f'{url}/copy')
    assert '\n' not in str(err.value)
    uri, _ = remote
    os.remove(uri[len('testshards://'):] + '/shard-000003.tar')
    with pytest.raises(FileNotFoundError) as err:
        WebDatasetShards(data_root=uri, cache_dir=str(tmp_path / 'c'))
    msg = str(err.value)
    assert '\n' not in msg and f'{uri}/shard-000003.tar' in msg and 'does not exist' in msg


def test_quickstart_pretraining_over_http_equals_the_folder(photo_folder, serve, tmp_path):
    assert write(photo_folder, tmp_path / 'shards', '--shard-size', '100KB') == 0
    url, requests = serve(tmp_path / 'shards')
    folder = _quickstart_run(dict(data_root=photo_folder), tmp_path / 'w_folder')
    over_http = _quickstart_run(dict(type='WebDatasetShards', data_root=url),
                                tmp_path / 'w_http')
    assert len(folder) == 2 and folder == over_http
    assert skipped_image_count() == 0
    assert sum(r[2] is not None for r in requests) >= 16  # two batches of 8: range requests


def test_the_documented_http_config_reads_the_shards(nested_photos, shards, serve, tmp_path):
    section = open(DOC, encoding='utf-8').read().split('### Sharded datasets', 1)[1]
    section = re.split(r'\n##+ ', section, maxsplit=1)[0]
    blocks = [b for b in re.findall(r'```python\n(.*?)```', section, re.S) if 'http' in b]
    assert len(blocks) == 1 and 'cache_dir' in section and "backend='petrel'" in section
    url, _ = serve(shards)
    path = tmp_path / 'doc.py'
    path.write_text(re.sub(r"'https?://[^']*'", repr(url), blocks[0]))
    cfg = Config.fromfile(str(path)).train_dataloader.dataset
    ds = WebDatasetShards(**{k: v for k, v in cfg.items() if k != 'type'})
    assert len(ds) == 64
    assert ds.prepare_data(5)['img_bytes'] == expected_bytes(nested_photos)[1][5]
