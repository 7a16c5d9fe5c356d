"""An image as EBS snapshot blocks: cut into 512 KiB blocks, written in parallel.

:class:`BlockCutter` is a :class:`~amibundle.pipeline.MemberWriter`: it takes
the image's data as ``(offset, data)`` pieces in increasing order (what the tar
reader yields, or what is read from an image file's data extents), shifted by
``shift`` bytes (partition 1's offset on a bootable disk), and hands on each
512 KiB block that holds data. Holes are never seen and all-zero blocks are
dropped: a fresh EBS volume reads zeros wherever no block was written.

:class:`BlockWriter` writes blocks with ``jobs`` threads. Memory is bounded:
at most ``jobs`` blocks are being sent and ``jobs`` more wait in the queue;
:meth:`BlockWriter.put` waits (polling, so Ctrl-C gets through) while the
queue is full. Each block goes with the Base64 SHA-256 of its bytes; its raw
digest is kept (32 bytes a block) for CompleteSnapshot's LINEAR aggregate:
SHA-256 over the blocks' digests in ascending block-index order, Base64 (as
awslabs' coldsnap computes it for the real service).

A block that still fails after botocore's own retries (throttling, 5xx, a
dropped connection) is sent again by :class:`RetryPolicy`'s rounds, with
full-jitter backoff; any other refusal fails the whole write at once. The
first failure (or :meth:`BlockWriter.abort`) stops every thread.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import queue
import random
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from amibundle.errors import IntegrityError

__all__ = [
    "BLOCK_SIZE",
    "BlockCutter",
    "BlockSink",
    "BlockWriter",
    "RetryPolicy",
    "WrittenBlocks",
    "linear_checksum",
]

BLOCK_SIZE = 512 * 1024  # the only block size PutSnapshotBlock accepts
ZERO_BLOCK = bytes(BLOCK_SIZE)
_POLL = 0.05  # seconds a wait lasts before it checks for a stop


class BlockSink(Protocol):
    """Where cut blocks go: a :class:`BlockWriter` (or a dict in tests)."""

    def put(self, index: int, block: bytes) -> None: ...


class BlockCutter:
    """Cuts ``(offset, data)`` pieces into whole blocks for ``sink``: the
    :class:`~amibundle.pipeline.MemberWriter` of to-ebs."""

    def __init__(self, sink: BlockSink, *, shift: int = 0) -> None:
        self._sink = sink
        self._shift = shift
        self._block = bytearray(BLOCK_SIZE)
        self._index = -1  # the block being filled; -1: none
        self._end = 0  # the disk offset just past the last byte taken
        self.blocks = 0  # blocks handed on (all-zero ones are not)

    def write(self, offset: int, data: memoryview) -> None:
        position = offset + self._shift
        if position < self._end:
            # The tar reader and the extent walk yield data in order; anything
            # else would silently overwrite a block already sent.
            raise IntegrityError(f"image data at offset {offset} comes after later data")
        view = memoryview(data)
        while view:
            index, start = divmod(position, BLOCK_SIZE)
            if index != self._index:
                self._emit()
                if start == 0 and len(view) >= BLOCK_SIZE:
                    # A whole block in one piece: no copy into the buffer.
                    self._hand_on(index, view[:BLOCK_SIZE])
                    view, position = view[BLOCK_SIZE:], position + BLOCK_SIZE
                    continue
                self._index = index
            taken = min(len(view), BLOCK_SIZE - start)
            self._block[start : start + taken] = view[:taken]
            view, position = view[taken:], position + taken
        self._end = position

    def _hand_on(self, index: int, data: memoryview | bytearray) -> None:
        block = bytes(data)  # bytes == bytes is one memcmp; a memoryview compares item by item
        if block != ZERO_BLOCK:
            self._sink.put(index, block)
            self.blocks += 1

    def _emit(self) -> None:
        if self._index >= 0:
            self._hand_on(self._index, self._block)
            self._block[:] = ZERO_BLOCK
            self._index = -1

    def finish(self, size: int) -> None:
        """Hands on the last block (past the image's end a volume reads zeros)."""
        self._emit()

    def abort(self) -> None:
        """The stream failed: tells the sink to stop (a ``put`` waiting ends)."""
        abort = getattr(self._sink, "abort", None)
        if callable(abort):
            abort()


def linear_checksum(digests_in_index_order: bytes | bytearray) -> str:
    """CompleteSnapshot's LINEAR aggregate of the blocks' raw SHA-256 digests."""
    return base64.b64encode(hashlib.sha256(digests_in_index_order).digest()).decode("ascii")


@dataclass(frozen=True)
class RetryPolicy:
    """Rounds of a block's own retries after botocore gave up on it: ``rounds``
    more tries, each after a full-jitter wait of up to ``base * 2**round``
    seconds (at most ``cap``)."""

    rounds: int = 4
    base: float = 1.0
    cap: float = 20.0

    def delay(self, round_number: int) -> float:
        return random.uniform(0, min(self.cap, self.base * 2.0**round_number))


@dataclass(frozen=True)
class WrittenBlocks:
    """What a snapshot's CompleteSnapshot needs, and what was sent."""

    count: int  # distinct blocks written: ChangedBlocksCount
    checksum: str  # the LINEAR aggregate
    bytes_sent: int  # block bytes accepted (retries not counted)
    retried: int  # block writes sent again by RetryPolicy


class _DigestLog:
    """The raw SHA-256 of every block written, 40 bytes each, in the order
    blocks were queued; sorted by index only if they were not queued in order."""

    def __init__(self) -> None:
        self._indexes = array("q")
        self._digests = bytearray()
        self._lock = threading.Lock()

    def reserve(self, index: int) -> int:
        with self._lock:
            self._indexes.append(index)
            self._digests += bytes(32)
            return len(self._indexes) - 1

    def fill(self, slot: int, digest: bytes) -> None:
        with self._lock:
            self._digests[slot * 32 : slot * 32 + 32] = digest

    def in_index_order(self) -> tuple[int, bytes]:
        with self._lock:
            indexes, digests = self._indexes, self._digests
            if len(set(indexes)) != len(indexes):
                raise ValueError("a block was queued twice")
            if all(a < b for a, b in itertools.pairwise(indexes)):
                return len(indexes), bytes(digests)
            order = sorted(range(len(indexes)), key=indexes.__getitem__)
            return len(order), b"".join(digests[i * 32 : i * 32 + 32] for i in order)


PutBlock = Callable[[int, bytes, str], None]  # (index, data, Base64 SHA-256)
IsRetryable = Callable[[BaseException], bool]


class BlockWriter:
    """Writes blocks with ``jobs`` threads through ``put_block``."""

    def __init__(
        self,
        put_block: PutBlock,
        *,
        jobs: int,
        is_retryable: IsRetryable,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._put_block = put_block
        self._is_retryable = is_retryable
        self._retry = retry or RetryPolicy()
        self._queue: queue.Queue[tuple[int, int, bytes] | None] = queue.Queue(jobs)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._log = _DigestLog()
        self._done = 0
        self._retried = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"amibundle-ebs-{n}", daemon=True)
            for n in range(jobs)
        ]
        for thread in self._threads:
            thread.start()

    # -- the calling side ------------------------------------------------------------------

    def put(self, index: int, block: bytes) -> None:
        """Queues one block (exactly BLOCK_SIZE bytes); waits while the queue
        is full. Raises the first failure of any writer thread."""
        if len(block) != BLOCK_SIZE:
            raise ValueError(f"a block is {BLOCK_SIZE} bytes, not {len(block)}")
        slot = self._log.reserve(index)
        while True:
            self._check()
            try:
                self._queue.put((slot, index, block), timeout=_POLL)
                return
            except queue.Full:
                continue

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise _Stopped

    def finish(self) -> WrittenBlocks:
        """Waits for every queued block; the count and aggregate checksum."""
        for _ in self._threads:
            while True:
                self._check()
                try:
                    self._queue.put(None, timeout=_POLL)
                    break
                except queue.Full:
                    continue
        for thread in self._threads:
            while thread.is_alive():
                thread.join(_POLL)
                self._check()
        self._check()
        count, digests = self._log.in_index_order()
        return WrittenBlocks(count, linear_checksum(digests), count * BLOCK_SIZE, self._retried)

    def abort(self) -> None:
        """Stops every thread after the request it is in (none is waited
        for: they are daemons, and what they still send is never completed)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    # -- the writer threads ------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is None:
                return
            slot, index, block = item
            try:
                digest = hashlib.sha256(block).digest()
                self._send(index, block, base64.b64encode(digest).decode("ascii"))
            except _Stopped:
                return
            except BaseException as err:  # handed to the calling thread
                with self._lock:
                    self._error = self._error or err
                self._stop.set()
                return
            self._log.fill(slot, digest)

    def _send(self, index: int, block: bytes, checksum: str) -> None:
        for round_number in range(self._retry.rounds + 1):
            try:
                self._put_block(index, block, checksum)
                return
            except Exception as err:
                if round_number == self._retry.rounds or not self._is_retryable(err):
                    raise
            with self._lock:
                self._retried += 1
            if self._stop.wait(self._retry.delay(round_number)):
                raise _Stopped


class _Stopped(Exception):
    """Raised where the writer was stopped (by abort or another thread's failure)."""
