"""The engine that runs many transfers at once, and the bodies they send.

Transfers run on a pool of ``jobs`` threads. The first failure (or Ctrl-C
in the calling thread) sets a stop flag; queued transfers are cancelled and
running ones notice the flag at their next read or write and end by raising
:class:`Stopped`, a ``BaseException`` so that neither boto3 nor urllib3
mistakes it for a network error worth retrying.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

__all__ = [
    "FileDigests",
    "Stopped",
    "UploadBody",
    "hash_file",
    "retry_delay",
    "run_parallel",
]

_CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class FileDigests:
    size: int
    md5: bytes
    sha1: str

    @property
    def md5_hex(self) -> str:
        return self.md5.hex()

    @property
    def md5_base64(self) -> str:
        return base64.b64encode(self.md5).decode("ascii")


def hash_file(handle: BinaryIO, stop: threading.Event) -> FileDigests:
    """Size, MD5 and SHA-1 of an open file, read once from where it is."""
    md5 = hashlib.md5()
    sha1 = hashlib.sha1()
    size = 0
    while chunk := handle.read(_CHUNK):
        if stop.is_set():
            raise Stopped
        md5.update(chunk)
        sha1.update(chunk)
        size += len(chunk)
    return FileDigests(size, md5.digest(), sha1.hexdigest())


class Stopped(BaseException):
    """Raised inside a transfer when the batch it belongs to was stopped: a
    BaseException, like KeyboardInterrupt, so that no ``except Exception``
    in boto3 or urllib3 takes it for a failed request and retries."""


class UploadBody:
    """A part file as a PUT body: reports bytes as they are sent (taking them
    back when a retry rewinds) and ends the request once ``stop`` is set.

    An exception raised by ``on_bytes`` is kept in :attr:`failure` and the
    request is ended with :class:`Stopped`: raised as itself, botocore would
    take it for a network error and retry.
    """

    def __init__(
        self, handle: BinaryIO, *, on_bytes: Callable[[int], None], stop: threading.Event
    ) -> None:
        self._handle = handle
        self._on_bytes = on_bytes
        self._stop = stop
        self._sending = False
        self._reported = 0  # bytes reported, i.e. the position the count is at
        self.failure: Exception | None = None

    def signal_sending(self, sending: bool) -> None:
        self._sending = sending

    def _report(self, nbytes: int) -> None:
        try:
            self._on_bytes(nbytes)
        except Exception as err:
            self.failure = err
            raise Stopped from err
        self._reported += nbytes

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise Stopped
        data = self._handle.read(size)
        if self._sending and data:
            self._report(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        if self._reported > position:  # a retry starts over
            self._report(position - self._reported)
        return position

    def tell(self) -> int:
        return self._handle.tell()


def retry_delay(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: full-jitter exponential
    backoff like botocore's standard mode (base 1 s, at most 20 s)."""
    return float(random.uniform(0, min(20.0, 2.0 ** (attempt - 1))))


def run_parallel(tasks: Sequence[Callable[[], T]], *, jobs: int, stop: threading.Event) -> list[T]:
    """Runs ``tasks`` on up to ``jobs`` threads, in order of submission, and
    returns their results in the same order.

    The first failure (or a KeyboardInterrupt while waiting) sets ``stop``,
    cancels what has not started, waits for running tasks to notice ``stop``
    and raises that first failure.
    """
    if not tasks:
        return []
    results: dict[int, T] = {}
    with ThreadPoolExecutor(
        max_workers=min(jobs, len(tasks)), thread_name_prefix="amibundle-s3"
    ) as pool:
        futures: dict[Future[T], int] = {pool.submit(task): i for i, task in enumerate(tasks)}
        pending: set[Future[T]] = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in sorted(done, key=futures.__getitem__):
                    error = future.exception()
                    if error is not None and not isinstance(error, Stopped):
                        raise error
                    if error is None:
                        results[futures[future]] = future.result()
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            raise
    if len(results) != len(tasks):  # only when tasks were stopped from outside
        raise Stopped
    return [results[i] for i in range(len(tasks))]
