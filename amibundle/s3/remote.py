"""A bundle's objects in a bucket: their keys, fetching them with retries of
broken bodies, reading the manifest, and the records the S3 operations return.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from amibundle.errors import IntegrityError, ManifestError, S3Error
from amibundle.format import manifest as mf
from amibundle.progress import Progress, Stage
from amibundle.results import JsonRecord
from amibundle.s3.client import Connection, error_code, s3_errors, s3_failure
from amibundle.s3.engine import Stopped, retry_delay
from amibundle.s3.settings import BucketRef

__all__ = [
    "CheckedPart",
    "S3Result",
    "bundle_keys",
    "fetch",
    "fetch_part",
    "get_manifest",
    "throughput",
]

log = logging.getLogger("amibundle.s3")

_CHUNK = 1 << 20

# A body cut short or stalled while streaming: botocore retries requests, not
# bodies, so downloads retry these themselves.
_STREAM_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
)
_T = TypeVar("_T")
_MISSING_HINT = "check the bucket, the key prefix and the manifest name or bundle prefix"


@dataclass(frozen=True)
class S3Result(JsonRecord):
    """A result with a ``bucket``: in JSON, its name and ``prefix`` apart."""

    bucket: BucketRef

    def json_extras(self) -> dict[str, Any]:
        return {"bucket": self.bucket.bucket, "prefix": self.bucket.prefix}


def throughput(nbytes: int, seconds: float) -> float:
    """Bytes per second (0 for no time at all)."""
    return nbytes / seconds if seconds > 0 else 0.0


def bundle_keys(bucket: BucketRef, manifest_name: str, manifest: mf.Manifest) -> list[str]:
    """The manifest's key first, then its parts' keys in manifest order."""
    if any(part.filename == manifest_name for part in manifest.parts):
        raise ManifestError(f"the manifest {manifest_name} lists itself as a part")
    return [bucket.key(manifest_name)] + [bucket.key(p.filename) for p in manifest.parts]


def fetch_part(
    conn: Connection,
    bucket: BucketRef,
    filename: str,
    consume: Callable[[str, Any, Callable[[int], None]], _T],
    *,
    stop: threading.Event,
    progress: Progress | None = None,
) -> _T:
    """:func:`fetch` of the part ``filename`` of a bundle in ``bucket``;
    ``consume(url, body, report)`` gets the part's URL too, for its messages."""
    key = bucket.key(filename)
    url = bucket.url(key)
    return fetch(
        conn,
        bucket,
        key,
        f"download {url}",
        lambda body, report: consume(url, body, report),
        stop=stop,
        progress=progress,
    )


def fetch(
    conn: Connection,
    bucket: BucketRef,
    key: str,
    what: str,
    consume: Callable[[Any, Callable[[int], None]], _T],
    *,
    stop: threading.Event,
    progress: Progress | None = None,
    missing: str | None = None,
) -> _T:
    """GETs ``key`` and hands its body to ``consume(body, report)``; a body
    that breaks off while streaming is fetched again (``attempts`` in all),
    taking back the progress it had reported. A missing key is reported as
    ``missing`` when given."""
    attempts = conn.settings.attempts
    for attempt in range(1, attempts + 1):
        counted = 0

        def report(nbytes: int) -> None:
            nonlocal counted
            counted += nbytes
            if progress is not None:
                progress.advance(Stage.DOWNLOAD, nbytes)

        with s3_errors(what, conn):
            try:
                reply = conn.client.get_object(Bucket=bucket.bucket, Key=key)
            except ClientError as err:
                if missing is not None and error_code(err)[0] in ("NoSuchKey", "404"):
                    raise S3Error(missing, hint=_MISSING_HINT) from None
                raise
        body = reply["Body"]
        try:
            return consume(body, report)
        except _STREAM_ERRORS as err:
            if progress is not None and counted:
                progress.advance(Stage.DOWNLOAD, -counted)
            if attempt == attempts:
                raise s3_failure(what, err, conn) from None
            log.info("%s: %s; trying again", what, err)
        finally:
            body.close()
        if stop.wait(retry_delay(attempt)):
            raise Stopped
    raise AssertionError("unreachable")  # pragma: no cover


class CheckedPart:
    """A part's body checked as it arrives (download and streamed unbundle share it):
    :meth:`chunks` stops when asked and refuses more bytes than the whole bundle;
    :meth:`verify` then compares the SHA-1 with the manifest's."""

    def __init__(
        self, part: mf.PartEntry, url: str, *, bundled_size: int, stop: threading.Event
    ) -> None:
        self._digest = part.digest
        self._url = url
        self._bundled_size = bundled_size
        self._stop = stop
        self._sha1 = hashlib.sha1()
        self.size = 0

    def chunks(self, body: Any) -> Iterator[bytes]:
        for chunk in body.iter_chunks(_CHUNK):
            if self._stop.is_set():
                raise Stopped
            self.size += len(chunk)
            if self.size > self._bundled_size:
                raise IntegrityError(
                    f"{self._url} is larger than the whole bundle ({self._bundled_size} bytes)"
                )
            self._sha1.update(chunk)
            yield chunk

    def verify(self) -> None:
        if self._sha1.hexdigest() != self._digest:
            raise IntegrityError(f"{self._url} is damaged: its SHA-1 does not match the manifest")


def _read_small(body: Any, report: Callable[[int], None], *, limit: int, url: str) -> bytes:
    data: bytes = body.read(limit + 1)
    if len(data) > limit:
        raise ManifestError(f"{url} is larger than {limit >> 20} MiB: not a bundle manifest")
    return data


def get_manifest(conn: Connection, bucket: BucketRef, key: str) -> bytes:
    url = bucket.url(key)
    return fetch(
        conn,
        bucket,
        key,
        f"download the manifest {url}",
        partial(_read_small, limit=mf.MAX_MANIFEST_SIZE, url=url),
        stop=threading.Event(),
        missing=f"there is no bundle manifest at {url}",
    )
