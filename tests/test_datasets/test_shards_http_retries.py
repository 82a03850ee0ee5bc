"""``WebDatasetShards`` over HTTP retries a request that failed for a reason that may pass (HTTP
503, a connection closed without a reply) and not one that failed for good (404), with
webdataset's retry count and delay by default; checked against the files the shards were
written from and against the requests a local server on 127.0.0.1 received."""
import importlib
import inspect
import pickle
import re
import time

import pytest

from mae_mm.datasets import WebDatasetShards, skipped_image_count
from mae_mm.datasets.http_reads import DownloadError
from tests.test_datasets.test_shards_remote import RangeHandler, expected_bytes, serve  # noqa
from tests.test_datasets.test_webdataset_shards import shards  # noqa: F401 (a fixture)


class FlakyHandler(RangeHandler):
    """Fails the next ``server.failures[path]`` requests of a path (any method): with HTTP
    ``server.fail_code``, or, when it is None, by closing the connection without a reply."""

    def _failed(self) -> bool:
        left = self.server.failures.get(self.path, 0)
        if not left:
            return False
        self.server.failures[self.path] = left - 1
        self.server.requests.append((self.command, self.path, 'failed', 0))
        if self.server.fail_code is None:
            self.close_connection = True  # no status line: the client sees RemoteDisconnected
        else:
            self.send_error(self.server.fail_code)
        return True

    def do_HEAD(self):
        if not self._failed():
            super().do_HEAD()

    def do_GET(self):
        if not self._failed():
            super().do_GET()


def _flaky(serve, shards, fail_code=503):
    failures = {}
    url, requests = serve(shards, handler=FlakyHandler, failures=failures, fail_code=fail_code)
    return url, requests, failures


def _failed(requests, path):
    return [r for r in requests if r[1] == path and r[2] == 'failed']


@pytest.mark.parametrize('fail_code', [503, None], ids=['http-503', 'connection-closed'])
def test_transient_failures_are_retried_and_read_the_same_bytes(nested_photos, shards, serve,
                                                                fail_code):
    url, requests, failures = _flaky(serve, shards, fail_code)
    # building: the index GET and shard 0's HEAD fail twice each, then succeed
    failures.update({'/index.json': 2, '/shard-000000.tar': 2})
    ds = WebDatasetShards(data_root=url, http_retries=3, http_retry_delay=0)
    assert not failures['/index.json'] and not failures['/shard-000000.tar']
    assert [r[0] for r in requests if r[1] == '/index.json'] == ['GET'] * 3
    assert [r[0] for r in requests if r[1] == '/shard-000000.tar'] == ['HEAD'] * 3
    # reading: every member's range request fails twice, then succeeds
    files, data = expected_bytes(nested_photos)
    before = skipped_image_count()
    for i, content in enumerate(data):
        info = ds.get_data_info(i)
        path = '/' + ds.shard_paths[info['shard']].rsplit('/', 1)[1]
        failures[path] = 2
        del requests[:]
        assert ds.prepare_data(i)['img_bytes'] == content
        assert [r[2] for r in requests] == ['failed', 'failed', f"bytes={info['offset']}-"
                                            f"{info['offset'] + len(content) - 1}"]
    assert skipped_image_count() == before


def test_whole_shards_into_the_cache_are_retried(nested_photos, shards, serve, tmp_path):
    url, requests, failures = _flaky(serve, shards, fail_code=None)
    ds = WebDatasetShards(data_root=url, cache_dir=str(tmp_path / 'cache'), http_retries=2,
                          http_retry_delay=0)
    for path in ds.shard_paths:
        failures['/' + path.rsplit('/', 1)[1]] = 2
    _, data = expected_bytes(nested_photos)
    assert [ds.prepare_data(i)['img_bytes'] for i in range(len(data))] == data
    for path in ds.shard_paths:  # two failures, then one whole download, then the cache
        name = '/' + path.rsplit('/', 1)[1]
        assert [r[2] for r in requests if r[1] == name and r[0] == 'GET'] == [
            'failed', 'failed', None]


def _skip_member_0(serve, shards, logs, fail_code, failures, retries):
    """Read member 0 of shard 0 while its requests fail ``failures`` times with ``fail_code``;
    it must be skipped and counted. -> (requests sent for it, the warning naming it)."""
    url, requests, failing = _flaky(serve, shards, fail_code)
    ds = WebDatasetShards(data_root=url, pipeline=[dict(type='LoadImageSafe')],
                          http_retries=retries, http_retry_delay=0)
    failing['/shard-000000.tar'] = failures
    del requests[:]
    before = skipped_image_count()
    assert ds.prepare_data(0) is None and skipped_image_count() == before + 1
    assert requests == _failed(requests, '/shard-000000.tar')  # only its failed requests
    lost = ds.get_data_info(0)['img_path']
    message = next(m for m in logs if lost in m)
    assert '\n' not in message
    return requests, message


def test_permanent_failures_are_not_retried(shards, serve, mmengine_logs):
    requests, message = _skip_member_0(serve, shards, mmengine_logs, 404, 1, retries=5)
    assert len(requests) == 1
    assert 'HTTP Error 404' in message and 'attempts' not in message


def test_a_member_still_failing_after_the_retries_is_skipped_and_counted(shards, serve,
                                                                        mmengine_logs):
    requests, message = _skip_member_0(serve, shards, mmengine_logs, 503, 10, retries=1)
    assert len(requests) == 2  # 1 + 1 retry
    assert 'after 2 attempts' in message and 'HTTP Error 503' in message


def test_the_retry_delay_is_waited(shards, serve):
    url, _, failures = _flaky(serve, shards, fail_code=503)
    ds = WebDatasetShards(data_root=url, http_retries=2, http_retry_delay=0.25)
    failures['/shard-000000.tar'] = 2
    started = time.perf_counter()
    assert ds.prepare_data(0)['img_bytes']
    assert time.perf_counter() - started >= 0.5  # two waits of at least 0.25 s


def test_the_defaults_are_webdatasets_curl_retries():
    """webdataset fetches shard URLs with ``curl ... --retry N --retry-delay S``: the same N and S
    are WebDatasetShards' defaults."""
    # the module (``webdataset.gopen`` the attribute is its function of the same name)
    source = inspect.getsource(importlib.import_module('webdataset.gopen'))
    retries = re.search(r'"--retry",\s*"(\d+)"', source)
    delay = re.search(r'"--retry-delay",\s*"(\d+)"', source)
    assert retries and delay, 'webdataset.gopen no longer passes --retry/--retry-delay to curl'
    defaults = inspect.signature(WebDatasetShards).parameters
    assert defaults['http_retries'].default == int(retries[1])
    assert defaults['http_retry_delay'].default == float(delay[1])


@pytest.mark.parametrize('field, value', [('http_retries', -1), ('http_retry_delay', -0.5)])
def test_bad_retry_settings_one_line_error(shards, field, value):
    with pytest.raises(ValueError) as err:
        WebDatasetShards(data_root=shards, **{field: value})
    message = str(err.value)
    assert '\n' not in message and f'train_dataloader.dataset.{field}={value}' in message


def test_download_errors_survive_pickling():
    """Data-loader workers send exceptions to the main process pickled."""
    err = DownloadError('http://host/shard-000001.tar', 'HTTPError: HTTP Error 503', 3)
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) == ("cannot download 'http://host/shard-000001.tar' after 3 "
                                     "attempts: HTTPError: HTTP Error 503")
    assert (back.url, back.reason, back.attempts) == (err.url, err.reason, err.attempts)
