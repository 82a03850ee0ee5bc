"""HTTP reads of remote shards: byte ranges, whole files and sizes, retried on transient errors.

Plain ``urllib`` (no extra dependency). A request that fails for a reason that may pass (a
refused or reset connection, a timeout, a body cut short, HTTP 408, 429 or 5xx) is sent again
after a fixed delay, up to ``retries`` times, as ``webdataset`` does with ``curl --retry 30
--retry-delay 2`` for its shard URLs (its defaults are the defaults here); a permanent failure
(404, 403, a bad reply) raises at once. Every failure raises :class:`DownloadError` with one
line naming the URL and the last error.
"""
import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar
from urllib.parse import urlsplit

from mmengine.logging import MMLogger

T = TypeVar('T')
TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
_HOSTS_WITHOUT_RANGES: set = set()  # warned about once per process


class DownloadError(OSError):
    """A remote shard or member could not be fetched (the member is skipped and counted).

    Args:
        url: What was asked for.
        reason: The last error, one line.
        attempts: How many requests were sent.
    """

    def __init__(self, url: str, reason: str, attempts: int = 1):
        tries = f' after {attempts} attempts' if attempts > 1 else ''
        super().__init__(f'cannot download {url!r}{tries}: {reason}')
        self.url, self.reason, self.attempts = url, reason, attempts

    def __reduce__(self):  # picklable (OSError's default rebuilds from the message alone)
        return type(self), (self.url, self.reason, self.attempts)


@dataclass(frozen=True)
class HttpPolicy:
    """How HTTP requests wait and retry.

    Args:
        timeout: Seconds without data before a request fails. Defaults to 60.
        retries: Further attempts after a transient failure. Defaults to 30 (webdataset's).
        retry_delay: Seconds between attempts. Defaults to 2.0 (webdataset's).
    """
    timeout: float = 60.0
    retries: int = 30
    retry_delay: float = 2.0


def first_line(err: BaseException) -> str:
    """``'Type: first line of the message'``, for one-line error messages."""
    return f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}'


def reason(err: BaseException) -> str:
    """Why a read failed, one line (a :class:`DownloadError`'s reason, without its URL)."""
    return err.reason if isinstance(err, DownloadError) else first_line(err)


def is_http(uri: str) -> bool:
    return uri.startswith(('http://', 'https://'))


def is_transient(err: BaseException) -> bool:
    """Whether sending the request again may succeed."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code in TRANSIENT_HTTP_CODES
    if isinstance(err, urllib.error.URLError):  # no reply: refused, reset, DNS, timeout
        return True
    return isinstance(err, (http.client.HTTPException, ConnectionError, socket.timeout,
                            TimeoutError))


def fetch(request: urllib.request.Request, read: Callable[[http.client.HTTPResponse], T],
          policy: HttpPolicy) -> T:
    """``read(response)`` of ``request``, the request and the read retried together on a
    transient failure; :class:`DownloadError` when it still fails or fails for good."""
    for attempt in range(policy.retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:
                return read(response)
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts
            if attempt < policy.retries and is_transient(err):
                time.sleep(policy.retry_delay)
                continue
            raise DownloadError(request.full_url, first_line(err), attempt + 1) from None
    raise AssertionError('unreachable')  # the loop returns or raises


def http_range(url: str, offset: int, size: int, policy: HttpPolicy = HttpPolicy()) -> bytes:
    """``size`` bytes of ``url`` from ``offset``: one GET with ``Range: bytes=offset-end``.

    A server that ignores ``Range`` answers 200 with the whole file: its body is read up to the
    end of the range and sliced, and a warning says so (once per host and process). Fewer bytes
    come back when the file is shorter. Any failure raises :class:`DownloadError`.
    """
    if size <= 0:
        return b''

    def read(response: http.client.HTTPResponse):
        if response.status == 206:
            got = response.headers.get('Content-Range', '')
            if not got.startswith(f'bytes {offset}-'):
                raise DownloadError(url, f'asked for bytes {offset}-, got Content-Range {got!r}')
            return response.read(size), True
        return response.read(offset + size)[offset:], False

    request = urllib.request.Request(url, headers={'Range': f'bytes={offset}-{offset + size - 1}'})
    data, ranged = fetch(request, read, policy)
    host = urlsplit(url).netloc
    if not ranged and host not in _HOSTS_WITHOUT_RANGES:
        _HOSTS_WITHOUT_RANGES.add(host)
        MMLogger.get_current_instance().warning(
            f'the HTTP server {host} ignores Range requests: each shard member is read by '
            f'downloading its shard up to the member; serve the shards with a server that '
            f'supports ranges, or give the data set a cache_dir to fetch each shard once')
    return data


def http_whole(url: str, policy: HttpPolicy = HttpPolicy()) -> bytes:
    """The whole body of ``url``; :class:`DownloadError` when it cannot be fetched."""
    return fetch(urllib.request.Request(url), lambda response: response.read(), policy)


def http_size(url: str, policy: HttpPolicy = HttpPolicy()) -> Optional[int]:
    """``Content-Length`` of a HEAD request (None when the server does not say);
    :class:`DownloadError` when the URL cannot be reached or does not exist."""
    length = fetch(urllib.request.Request(url, method='HEAD'),
                   lambda response: response.headers.get('Content-Length', ''), policy)
    return int(length) if length.isdigit() else None
