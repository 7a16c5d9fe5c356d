"""A bundle's parts read straight from a bucket, in order, for unbundling.

:class:`S3PartReader` is a :class:`~amibundle.parts.PartSource`: it fetches
the parts the manifest lists, ``prefetch`` at a time ahead of the reader,
hashes each as it arrives and hands a part on only once its size and SHA-1
match the manifest. Memory is bounded by ``prefetch + 1`` parts; nothing is
written to disk. Broken bodies are fetched again (``remote.fetch``),
failed requests retried by botocore.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from amibundle.errors import IntegrityError
from amibundle.format.manifest import PartEntry
from amibundle.progress import Progress
from amibundle.s3.client import Connection
from amibundle.s3.remote import CheckedPart, fetch_part
from amibundle.s3.settings import BucketRef

__all__ = ["S3PartReader"]


class S3PartReader:
    """The concatenated, verified bytes of a bundle's parts in a bucket."""

    def __init__(
        self,
        conn: Connection,
        bucket: BucketRef,
        parts: Sequence[PartEntry],
        bundled_size: int,
        *,
        prefetch: int,
        progress: Progress,
    ) -> None:
        self._conn = conn
        self._bucket = bucket
        self._parts = list(parts)
        self._bundled_size = bundled_size
        self._progress = progress
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, prefetch), thread_name_prefix="amibundle-fetch"
        )
        self._ahead: deque[Future[list[bytes]]] = deque()
        self._submitted = 0
        self._chunks: deque[bytes] = deque()  # the part being read, as received
        self._current = memoryview(b"")
        self._offset = 0
        self._prefetch = max(1, prefetch)
        self.total = 0
        self.checked = 0  # parts fully received and verified

    def _submit_next(self) -> None:
        if self._submitted < len(self._parts):
            part = self._parts[self._submitted]
            self._ahead.append(self._pool.submit(self._fetch, part))
            self._submitted += 1

    def readinto(self, buffer: memoryview) -> int:
        if self._submitted == 0:  # the first read starts the fetches, not the constructor
            for _ in range(self._prefetch):
                self._submit_next()
        while self._offset == len(self._current):
            if not self._chunks and not self._next_part():
                if self.total != self._bundled_size:
                    raise IntegrityError(
                        f"the parts hold {self.total} bytes but the manifest says "
                        f"bundled_size {self._bundled_size}"
                    )
                return 0
            self._current, self._offset = memoryview(self._chunks.popleft()), 0
        n = min(len(buffer), len(self._current) - self._offset)
        buffer[:n] = self._current[self._offset : self._offset + n]
        self._offset += n
        return n

    def _next_part(self) -> bool:
        """Takes the next verified part (waiting for it); False after the last."""
        if not self._ahead:
            return False
        chunks = self._ahead.popleft().result()
        self.checked += 1
        self._submit_next()
        self._chunks.extend(chunks)
        self.total += sum(len(chunk) for chunk in chunks)
        return True

    def close(self) -> None:
        """Stops the fetches still running and drops what was prefetched."""
        self.stop.set()
        for future in self._ahead:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._ahead.clear()

    def _fetch(self, part: PartEntry) -> list[bytes]:
        return fetch_part(
            self._conn,
            self._bucket,
            part.filename,
            partial(self._receive, part),
            stop=self.stop,
            progress=self._progress,
        )

    def _receive(
        self, part: PartEntry, url: str, body: Any, report: Callable[[int], None]
    ) -> list[bytes]:
        # Kept as the chunks received: one growing buffer per part would be
        # copied as it grows and fragment the heap of every fetch thread.
        check = CheckedPart(part, url, bundled_size=self._bundled_size, stop=self.stop)
        chunks: list[bytes] = []
        for chunk in check.chunks(body):
            chunks.append(chunk)
            report(len(chunk))
        if not check.size:
            raise IntegrityError(f"{url} is empty")
        check.verify()
        return chunks
