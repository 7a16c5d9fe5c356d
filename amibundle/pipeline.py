"""The streaming engine: image -> bundle parts, and parts -> image.

Bundling, stage by stage (each stage hands buffers to the next; nothing
full-size is ever held or written)::

    data extents --tar framing--> T --SHA-1--> gzip (N threads) --AES-CBC--> parts (SHA-1 each)

The calling thread reads the image and hashes the tar stream; compression
runs on ``threads`` worker threads; ISA-L's writer thread encrypts and cuts
parts. Unbundling runs the same stages backwards, with part reading,
decryption and decompression in one background thread and tar parsing,
hashing and sparse writing in the calling thread.

These functions know streams, not files or manifests: their callers
(:mod:`amibundle.bundling`, :mod:`amibundle.unbundling`, ...) wire them to those.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from amibundle.compression import (
    DECOMPRESSION_ERRORS,
    Compression,
    check_level,
    default_threads,
    detect,
    open_compressor,
    open_decompressor,
)
from amibundle.crypto import BundleKey, CbcDecryptor, CbcEncryptor
from amibundle.errors import IntegrityError
from amibundle.format.tar import Extent, Member, MemberInfo, padding, stored_size
from amibundle.format.tar_reader import SingleMemberReader
from amibundle.format.tar_writer import encode_header, end_of_archive, tar_size
from amibundle.parts import PartRecord, PartSource, PartSplitter, PartWriter
from amibundle.progress import NullProgress, Progress, Stage
from amibundle.sparse import ExtentReader, read_image_extents
from amibundle.validate import as_enum, check_positive

__all__ = [
    "BundleStreamResult",
    "Codec",
    "UnbundleStreamResult",
    "MemberWriter",
    "bundle_stream",
    "read_all_parts",
    "tar_stream",
    "unbundle_stream",
]

_READ_BUFFER = 1 << 20
_POLL = 0.05  # seconds a thread waits on a queue before it checks for a stop


@dataclass(frozen=True)
class Codec:
    """How the tar stream is compressed; checked when made."""

    compression: Compression = Compression.GZIP
    level: int | None = None  # None: the compression's default (compression.DEFAULT_LEVELS)
    threads: int = field(default_factory=default_threads)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "compression", as_enum(Compression, self.compression, "compression")
        )
        if self.level is not None:
            check_level(self.compression, self.level)
        check_positive(self.threads, "threads")


@dataclass(frozen=True)
class BundleStreamResult:
    tar_sha1: str
    tar_size: int
    parts: tuple[PartRecord, ...]
    bundled_size: int


class _Encrypting:
    """The raw stream the compressor writes into: encrypts into the splitter."""

    def __init__(self, encryptor: CbcEncryptor) -> None:
        self._encryptor = encryptor

    def write(self, data: bytes | memoryview) -> int:
        self._encryptor.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def tar_stream(fd: int | ExtentReader, member: MemberInfo) -> Iterator[bytes | memoryview]:
    """The whole tar archive T for one member, in pieces, its data read from
    ``fd`` (a file descriptor, or a reader of another image source). Read
    buffers are reused: consumers must use each piece before asking for the next."""
    header = encode_header(member)
    yield header
    if member.extents is not None:
        extents: Sequence[Extent] = member.extents
    else:
        extents = (Extent(0, member.size),) if member.size else ()
    yield from read_image_extents(fd, extents, itertools.repeat(bytearray(_READ_BUFFER)))
    stored = stored_size(member)
    yield padding(stored)
    written = len(header) + stored + len(padding(stored))
    yield end_of_archive(written)


def bundle_stream(
    fd: int | ExtentReader,
    member: MemberInfo,
    key: BundleKey,
    sink: PartWriter,
    *,
    part_size: int,
    codec: Codec | None = None,
    progress: Progress | None = None,
) -> BundleStreamResult:
    """Streams the image open on ``fd`` (or read by an ExtentReader) into
    ``sink`` as encrypted parts.

    On success the sink is neither committed nor aborted: the caller decides,
    once it also has the manifest. On failure (Ctrl-C included) the sink is
    aborted first, which ends a write the compressor's writer thread may be
    inside, then the compressor is aborted: its threads stop without writing
    anything more, so the failure never waits on work nobody will use.
    """
    codec = codec or Codec()
    progress = progress or NullProgress()
    splitter = PartSplitter(sink, part_size)
    encryptor = CbcEncryptor(key, splitter.take_ciphertext)
    compressor = open_compressor(
        codec.compression, codec.level, codec.threads, _Encrypting(encryptor)
    )
    tar_hash = hashlib.sha1()
    tar_bytes = 0
    progress.start(Stage.READ, tar_size(member))
    try:
        for piece in tar_stream(fd, member):
            tar_hash.update(piece)
            compressor.write(piece)
            tar_bytes += len(piece)
            progress.advance(Stage.READ, len(piece))
        compressor.close()  # flushes the last blocks and the gzip trailer
        encryptor.close()
        records = splitter.finish()
    except BaseException as err:
        sink.abort()
        compressor.abort()
        progress.finish(Stage.READ, err)
        raise
    progress.finish(Stage.READ)
    return BundleStreamResult(tar_hash.hexdigest(), tar_bytes, tuple(records), splitter.total)


# --- unbundling --------------------------------------------------------------


def _decrypted_chunks(parts: PartSource, key: BundleKey) -> Iterator[bytes]:
    """The plaintext of the concatenated parts, in chunks of about 1 MiB."""
    ready: deque[bytes] = deque()
    decryptor = CbcDecryptor(key, lambda view: ready.append(bytes(view)))
    buffer = bytearray(_READ_BUFFER)
    while n := parts.readinto(memoryview(buffer)):
        decryptor.write(memoryview(buffer)[:n])
        yield from ready
        ready.clear()
    decryptor.close()  # checks the padding
    yield from ready


class _Stage:
    """A readable stream fed by a worker thread that runs ``produce()`` a few
    chunks ahead of the reader. Unbundling chains two: part reading, SHA-1
    checks and decryption in one, decompression in the next, each beside the
    tar parsing of the calling thread. The worker's first error is raised to
    the reader. :meth:`stop` ends the worker within one chunk's work: both
    sides wait on the queue with a timeout and check the stop flag."""

    _END = b""

    def __init__(self, produce: Callable[[], Iterable[bytes]], name: str, depth: int = 4) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stopping = threading.Event()
        self._chunk = b""  # the chunk being read, from self._offset on
        self._offset = 0
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(produce,), name=name, daemon=True)
        self._thread.start()

    def _run(self, produce: Callable[[], Iterable[bytes]]) -> None:
        try:
            for chunk in produce():
                if self._stopping.is_set():
                    return
                if chunk:
                    self._put(chunk)
            self._put(self._END)
        except BaseException as err:  # handed to the reader
            self._put(err)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _fill(self) -> bool:
        """Makes sure unread bytes are at hand; False at the end of the stream."""
        while self._offset == len(self._chunk) and not self._done:
            if self._stopping.is_set():
                raise _Stopped
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                self._done = True
                raise item
            self._done = item == self._END
            self._chunk, self._offset = item, 0
        return self._offset < len(self._chunk)

    def peek(self, size: int) -> bytes:
        return self._chunk[self._offset : self._offset + size] if self._fill() else b""

    def read(self, size: int = -1) -> bytes:
        if not self._fill():
            return b""
        chunk, start = self._chunk, self._offset
        end = len(chunk) if size < 0 else min(len(chunk), start + size)
        self._offset = end
        return chunk if start == 0 and end == len(chunk) else chunk[start:end]

    def readinto(self, buffer: memoryview | bytearray) -> int:
        if not self._fill():
            return 0
        n = min(len(buffer), len(self._chunk) - self._offset)
        memoryview(buffer)[:n] = memoryview(self._chunk)[self._offset : self._offset + n]
        self._offset += n
        return n

    def readable(self) -> bool:
        return True

    def request_stop(self) -> None:
        """Tells the worker to stop (and a reader waiting on it to give up)."""
        self._stopping.set()

    def stop(self) -> None:
        """Stops the worker and waits for it; safe to call more than once."""
        self._stopping.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()


class _Stopped(Exception):
    """Raised in a stage's worker that reads from a stage being stopped."""


class _Hashing:
    """Passes the decompressed stream through while hashing it (the tar
    stream's SHA-1) and counting it against ``limit``: once the tar header
    tells how long the whole archive can be, a stream that goes on longer
    (a decompression bomb) is stopped there, before it costs disk or time.
    ``read`` hands on the decompressor's own bytes objects: no copy."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.sha1 = hashlib.sha1()
        self.size = 0
        self.limit: int | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._source.read(size)
        except DECOMPRESSION_ERRORS as err:
            if isinstance(err, IntegrityError):
                raise
            raise IntegrityError(
                f"the compressed stream inside the bundle is damaged ({err})"
            ) from None
        self.sha1.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise IntegrityError(
                f"the bundle's tar stream goes on past the {self.limit} bytes its image size "
                "allows: a damaged or hostile bundle"
            )
        return data


class _BackgroundWriter:
    """Runs a :class:`MemberWriter` in a worker thread, so the kernel's time
    writing the image overlaps hashing and tar parsing in the calling thread.
    The queue is short, which bounds memory; the first error the worker meets
    is raised in the calling thread at the next call."""

    def __init__(self, inner: MemberWriter, depth: int = 8) -> None:
        self._inner = inner
        self._queue: queue.Queue[list[tuple[int, memoryview]] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="amibundle-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None:  # after an error, drain so no put() blocks forever
                try:
                    for offset, data in batch:
                        self._inner.write(offset, data)
                except BaseException as err:  # handed to the calling thread
                    self._error = err

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write_batch(self, batch: list[tuple[int, memoryview]]) -> None:
        while True:
            self._check()
            try:
                self._queue.put(batch, timeout=_POLL)
                return
            except queue.Full:
                continue

    def stop(self) -> None:
        """Waits for the queued writes; safe to call more than once."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=_POLL)
                break
            except queue.Full:
                continue
        self._thread.join()

    def abort(self) -> None:
        """Drops the queued writes and stops the thread. A writer with an
        ``abort()`` of its own (to-ebs's, which may be waiting for the
        network) is told first, so that the write it is in ends at once."""
        self._error = self._error or _Stopped()
        abort_inner = getattr(self._inner, "abort", None)
        if callable(abort_inner):
            abort_inner()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self.stop()

    def finish(self, size: int) -> None:
        self.stop()
        self._check()
        self._inner.finish(size)


@dataclass(frozen=True)
class UnbundleStreamResult:
    member: Member
    tar_sha1: str
    tar_size: int
    compression: Compression


class MemberWriter(Protocol):
    """What unbundling writes the member's data into (a sparse file, EBS
    blocks). It may also have an ``abort()``, called (from another thread)
    when the stream fails, to end a ``write`` that waits."""

    def write(self, offset: int, data: memoryview) -> None: ...
    def finish(self, size: int) -> None: ...


def unbundle_stream(
    parts: PartSource,
    key: BundleKey,
    open_output: Callable[[Member], MemberWriter],
    *,
    expected_size: int | None = None,
    progress: Progress | None = None,
    stage: Stage = Stage.EXTRACT,
) -> UnbundleStreamResult:
    """Decrypts, decompresses and un-tars ``parts``; ``open_output`` is called
    with the member's header and returns where its data goes. Part digests
    are checked by ``parts``; the caller compares ``tar_sha1`` with the
    manifest.

    With ``expected_size`` (the manifest's ``<size>``), a member of another
    size is refused before anything is written, and the stream is stopped as
    soon as it runs longer than the archive that size implies. Progress
    (bytes of image data, as ``stage``) is reported from the calling thread,
    so a listener may raise to stop the work. On any failure every thread
    is stopped before this returns."""
    progress = progress or NullProgress()
    decrypted = _Stage(lambda: _decrypted_chunks(parts, key), "amibundle-decrypt")
    stages = [decrypted]
    output: _BackgroundWriter | None = None
    try:
        compression = detect(decrypted.peek(4))
        decompressor = open_decompressor(compression, decrypted)  # type: ignore[arg-type]
        inflated = _Stage(lambda: _chunks_of(decompressor), "amibundle-inflate")
        stages.insert(0, inflated)
        hashing = _Hashing(inflated)  # type: ignore[arg-type]
        reader = SingleMemberReader(hashing)  # type: ignore[arg-type]  # needs read() only
        member = reader.read_header()
        if expected_size is not None:
            _check_member_size(member, expected_size)
            hashing.limit = _archive_limit(reader.bytes_read, member)
        output = _BackgroundWriter(open_output(member))
        progress.start(stage, sum(extent.length for extent in member.sparse_map))
        for batch in reader.iter_batches():
            output.write_batch(batch)
            progress.advance(stage, sum(len(data) for _, data in batch))
        reader.finish()
        output.finish(member.size)
        progress.finish(stage)
    except BaseException as err:
        if output is not None:
            output.abort()
        progress.finish(stage, err)
        raise
    finally:
        # Outermost first: a stage reading from one being stopped gives up.
        for running in stages:
            running.request_stop()
        for running in stages:
            running.stop()
        if output is not None:
            output.stop()
    return UnbundleStreamResult(member, hashing.sha1.hexdigest(), hashing.size, compression)


def _chunks_of(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_READ_BUFFER):
        yield chunk


def _check_member_size(member: Member, expected_size: int) -> None:
    if member.size != expected_size:
        raise IntegrityError(
            f"the image in the bundle is {member.size} bytes but the manifest says {expected_size}"
        )


def _archive_limit(header_bytes: int, member: Member) -> int:
    """The most a tar archive with this member can hold: its headers, the
    stored data and padding, two zero blocks, and zeros up to the next
    10 KiB record (GNU tar's and Python's blocking; Go writes none)."""
    stored = sum(extent.length for extent in member.sparse_map)
    body = header_bytes + stored + len(padding(stored))
    return body + len(end_of_archive(body))


def read_all_parts(parts: PartSource) -> None:
    """Reads every part through ``parts`` (checking each), discarding the data."""
    buffer = memoryview(bytearray(_READ_BUFFER))
    while parts.readinto(buffer):
        pass
