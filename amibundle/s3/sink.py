"""Parts straight into a bucket while the stream is still being compressed.

:class:`S3PartSink` is a :class:`~amibundle.parts.PartWriter`: the stream
engine fills one part buffer at a time (from the compressor's writer
thread); each full part is handed to a pool of ``jobs`` upload threads and
the writer goes on with the next one. When ``jobs`` parts are in flight,
the writer blocks until one is confirmed, so memory is bounded by
``jobs + 1`` part buffers (reused) whatever the image size, and nothing is
written to the local disk.

Each part is PUT with the canned ACL and its Content-MD5; botocore retries
transient failures (5xx, SlowDown, dropped connections) from the buffer,
which is only released once S3 confirmed the part. Progress counts a part
when it is confirmed. The first failure stops
the other uploads and is raised at the writer's next call (as an
``Exception``: the threaded compressor records those and stops feeding the
sink), and again by :meth:`S3PartSink.finish`.

Part names are fixed before the part count is known (:class:`PartNames`);
EC2 and every reader take the names from the manifest.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from amibundle.errors import S3Error
from amibundle.parts import PartRecord
from amibundle.progress import Progress, Stage
from amibundle.s3.client import Connection
from amibundle.s3.engine import Stopped
from amibundle.s3.settings import BucketRef
from amibundle.s3.upload import put_object

__all__ = ["PartNames", "S3PartSink", "max_bundled_size"]

# How long a blocked writer sleeps between looks at the stop flag.
_POLL = 0.1


def max_bundled_size(tar_size: int) -> int:
    """An upper bound of the bundled (compressed and encrypted) size of a tar
    stream of ``tar_size`` bytes, for any codec amibundle writes.

    Incompressible data grows at most: deflate 5 bytes per 64 KiB stored
    block plus a flush marker per 1 MiB block and the gzip header and
    trailer; zstd ``ZSTD_COMPRESSBOUND`` (n + n/256 + 128 KiB-ish); AES-CBC
    padding 16 bytes. n/128 + 64 KiB covers all of them with room to spare.
    """
    return tar_size + tar_size // 128 + 65536 + 16


@dataclass(frozen=True)
class PartNames:
    """The part names of a streamed bundle: ``<prefix>.part.<i>``, with ``i``
    zero-padded to ``digits``.

    The classic rule pads to the digit count of the part count, known only
    at the end of the stream; a streamed upload must name part 0 before
    that. :meth:`for_stream` pads to the digit count of the largest part
    count the stream can reach (:func:`max_bundled_size`), so the names
    equal the classic ones except when compression takes the count below a
    power of ten (39 parts may be named ``.part.000`` … ``.part.038``).
    """

    prefix: str
    digits: int

    @classmethod
    def for_stream(cls, prefix: str, tar_size: int, part_size: int) -> PartNames:
        most = -(-max_bundled_size(tar_size) // part_size)  # ceiling division
        return cls(prefix, len(str(max(most, 1))))

    def name(self, index: int) -> str:
        return f"{self.prefix}.part.{index:0{self.digits}d}"

    def names(self, count: int) -> list[str]:
        return [self.name(index) for index in range(count)]


class S3PartSink:
    """Uploads parts to ``bucket`` as they are cut, at most ``jobs`` at once.

    Use: hand it to :func:`amibundle.pipeline.bundle_stream`, then
    :meth:`finish` (waits for every part, raises the first failure) or, on
    any failure, :meth:`abort` (stops the uploads; the engine calls it too)
    and delete :meth:`sent_keys`: those may exist in the bucket.
    """

    def __init__(
        self,
        conn: Connection,
        bucket: BucketRef,
        names: PartNames,
        *,
        acl: str,
        part_size: int,
        jobs: int,
        progress: Progress,
    ) -> None:
        self._conn = conn
        self._bucket = bucket
        self._names = names
        self._acl = acl
        self._part_size = part_size
        self._progress = progress
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="amibundle-s3")
        self._slots = threading.Semaphore(jobs)
        self._lock = threading.Lock()
        self._spare: list[bytearray] = []  # buffers of finished uploads, for reuse
        self._buffer: bytearray | None = None
        self._filled = 0
        self._futures: list[Future[str]] = []
        self._failure: Exception | None = None
        self._attempted: list[str] = []
        self.confirmed: set[str] = set()  # keys S3 answered 200 for

    # -- the PartWriter role (the compressor's writer thread) ---------------------

    def open_part(self, index: int) -> None:
        self._check()
        with self._lock:
            self._buffer = self._spare.pop() if self._spare else bytearray(self._part_size)
        self._filled = 0

    def write(self, data: memoryview) -> None:
        self._check()
        assert self._buffer is not None
        end = self._filled + len(data)
        self._buffer[self._filled : end] = data
        self._filled = end

    def close_part(self, record: PartRecord) -> None:
        assert self._buffer is not None
        while not self._slots.acquire(timeout=_POLL):
            self._check()  # a failed upload frees no slot for long: stop waiting
        buffer, self._buffer = self._buffer, None
        try:
            self._check()
            future = self._pool.submit(self._upload, record.index, buffer, record.size)
        except BaseException:
            self._slots.release()
            raise
        self._futures.append(future)

    # -- the caller's side -----------------------------------------------------------

    def finish(self) -> list[str]:
        """Waits for every part; returns their keys in part order, or raises
        the first failure."""
        wait(self._futures)
        self._pool.shutdown()
        self._check()
        return [future.result() for future in self._futures]

    def abort(self) -> None:
        """Stops every upload and waits for them to end (an upload stops at
        its next read); safe to call more than once, from any thread. What
        was sent is not deleted here: the caller deletes :meth:`sent_keys`
        and reports what it could not."""
        self._stop.set()
        wait(list(self._futures))
        self._pool.shutdown()

    def sent_keys(self) -> list[str]:
        """Every key a PUT was started for: the bucket may hold those."""
        with self._lock:
            return list(self._attempted)

    # -- the upload threads ------------------------------------------------------------

    def _check(self) -> None:
        """Raises the first failure; a stopped sink refuses more data."""
        if self._failure is not None:
            raise self._failure
        if self._stop.is_set():
            raise S3Error("the upload was stopped")

    def _upload(self, index: int, buffer: bytearray, size: int) -> str:
        key = self._bucket.key(self._names.name(index))
        try:
            view = memoryview(buffer)[:size]
            md5 = base64.b64encode(hashlib.md5(view).digest()).decode("ascii")
            # The buffer itself is the body: urllib3 hands a bytes-like body to
            # sendall() whole, where a file-like one costs a Python call per
            # 8 KiB. Only the short last part is copied (botocore takes no
            # memoryview).
            body = buffer if size == len(buffer) else bytearray(view)
            with self._lock:
                self._attempted.append(key)
            if self._stop.is_set():
                raise Stopped
            put_object(
                self._conn,
                self._bucket,
                key,
                f"upload part {index} to {self._bucket.url(key)}",
                acl=self._acl,
                Body=body,
                ContentLength=size,
                ContentMD5=md5,
            )
            with self._lock:
                self.confirmed.add(key)
            self._progress.advance(Stage.UPLOAD, size)
            return key
        except Exception as err:
            self._fail(err)
            raise
        finally:
            with self._lock:
                self._spare.append(buffer)
            self._slots.release()

    def _fail(self, err: Exception) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = err
        self._stop.set()  # the other uploads end at their next read
