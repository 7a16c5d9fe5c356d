"""The compression stage: gzip (what EC2 reads) or zstd (bundles that never
go to EC2), both multi-threaded, both a single stream.

gzip is written pigz-style by :class:`ParallelGzipWriter`: 1 MiB blocks are
deflated in parallel, each with the previous 32 KiB as dictionary and
flushed to a byte boundary, and joined in order into ONE ordinary gzip
member, the form every gunzip and EC2 read. Levels 1-3 use ISA-L (the
fastest deflate there is: 330-450 MB/s a core at level 2 on root file
systems), levels 4-9 zlib-ng (better ratios, ~100 MB/s a core). The default,
2, is the fastest level whose output stays within 15% of ``gzip -9`` on such
data (14.8% on the benchmark's 1.2 GB of /usr files; see benchmarks/README.md).

Every compressor can be finished (:meth:`Compressor.close`: the last blocks
and the trailer) or aborted (:meth:`Compressor.abort`: threads stopped,
nothing more written), and an abort always ends within a block's time: the
worker threads never wait on anything but bounded queues polled with a
timeout. (The libraries' own threaded writers can wait forever when an error
or Ctrl-C strikes between their queues, and their close() always flushes.)

Readers detect the format from its magic bytes and decompress in the
calling thread; the pipeline gives them a thread of their own.
"""

from __future__ import annotations

import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import Enum
from types import ModuleType
from typing import Any, BinaryIO, Protocol, cast

import zstandard
from isal import igzip, isal_zlib
from zlib_ng import zlib_ng

from amibundle.errors import IntegrityError, UsageError

__all__ = [
    "DECOMPRESSION_ERRORS",
    "DEFAULT_LEVELS",
    "GZIP_MAGIC",
    "LEVEL_RANGES",
    "ZSTD_MAGIC",
    "Compression",
    "Compressor",
    "ParallelGzipWriter",
    "RawSink",
    "check_level",
    "default_threads",
    "detect",
    "open_compressor",
    "open_decompressor",
]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLOCK = 1 << 20
_WINDOW = 32 * 1024  # deflate's dictionary: the previous block's last 32 KiB
_POLL = 0.05  # seconds a thread waits on a queue before it checks for a stop
# What the decompressors raise for damaged input.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    cast(type[BaseException], isal_zlib.error),  # typed as an instance in its stubs
    zstandard.ZstdError,
    IntegrityError,  # the zstd frame check's own
)


class Compression(str, Enum):
    GZIP = "gzip"
    ZSTD = "zstd"


class RawSink(Protocol):
    """Where compressed bytes go (the encryption stage)."""

    def write(self, data: bytes | memoryview) -> int: ...
    def flush(self) -> None: ...


class Compressor(Protocol):
    """A compression stage: ``write`` the input, then ``close`` (finish the
    stream) or ``abort`` (stop at once, nothing more written)."""

    def write(self, data: bytes | bytearray | memoryview) -> int: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


DEFAULT_LEVELS = {Compression.GZIP: 2, Compression.ZSTD: 3}
LEVEL_RANGES = {Compression.GZIP: range(1, 10), Compression.ZSTD: range(1, 23)}
_ISAL_LEVELS = range(1, 4)  # gzip levels served by ISA-L; zlib-ng takes the rest


def check_level(kind: Compression, level: int | None) -> int:
    """The level to use: the default for ``kind`` when None, else ``level``
    if ``kind`` has it."""
    if level is None:
        return DEFAULT_LEVELS[kind]
    allowed = LEVEL_RANGES[kind]
    if level not in allowed:
        raise UsageError(
            f"{{param}} for {kind.value} must be {allowed.start} to "
            f"{allowed.stop - 1}, not {level}",
            param="level",
        )
    return level


def open_compressor(
    kind: Compression, level: int | None, threads: int, sink: RawSink
) -> Compressor:
    """A compressor writing into ``sink``."""
    if threads < 1:
        raise UsageError(f"{{param}} must be at least 1, not {threads}", param="threads")
    level = check_level(kind, level)
    if kind is Compression.GZIP:
        engine = isal_zlib if level in _ISAL_LEVELS else zlib_ng
        return ParallelGzipWriter(sink, engine=engine, level=level, threads=threads)
    return _ZstdWriter(sink, level=level, threads=threads)


# Blocks queued per compression thread: four keep both cores busy (about 182%
# CPU instead of 178% while bundling the benchmark image, and 3-4% faster)
# for 4 MiB a thread.
_QUEUE_DEPTH = 4
_Deflated = tuple[bytes, int, int]  # compressed block, CRC-32 of the input, input length


def _deflater(engine: ModuleType, level: int) -> Callable[[bytes | bytearray, bytes], _Deflated]:
    """Deflates one block (raw, sync-flushed, with the previous block's tail
    as dictionary) and computes its CRC-32. The engines' ``_ParallelCompress``
    does both in one call without the GIL, the primitive their own threaded
    writers use; it is private, so the public compressobj serves if it is
    ever gone (about a quarter slower on two cores)."""
    parallel = getattr(engine, "_ParallelCompress", None)
    if parallel is not None:
        local = threading.local()

        def deflate_in_one(block: bytes | bytearray, dictionary: bytes) -> _Deflated:
            compressor = getattr(local, "compressor", None)
            if compressor is None:
                compressor = local.compressor = parallel(
                    buffersize=_BLOCK + _BLOCK // 8, level=level
                )
            data, crc = compressor.compress_and_crc(block, dictionary)
            return data, crc, len(block)

        return deflate_in_one

    def deflate(block: bytes | bytearray, dictionary: bytes) -> _Deflated:
        if dictionary:
            compressor = engine.compressobj(level, engine.DEFLATED, -15, zdict=dictionary)
        else:
            compressor = engine.compressobj(level, engine.DEFLATED, -15)
        data = compressor.compress(block) + compressor.flush(engine.Z_SYNC_FLUSH)
        return data, engine.crc32(block), len(block)

    return deflate


class ParallelGzipWriter:
    """pigz-style gzip: blocks deflated on ``threads`` workers, written in
    order by one writer thread into ``sink`` (which encrypts and cuts parts
    there). The first error of any thread is raised at the next call."""

    def __init__(self, sink: RawSink, *, engine: ModuleType, level: int, threads: int) -> None:
        self._sink = sink
        self._engine = engine
        self._deflate = _deflater(engine, level)
        self._block = bytearray(_BLOCK)  # filled by small writes, handed over when full
        self._filled = 0
        self._dictionary = b""
        self._crc = 0
        self._size = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="amibundle-gzip")
        self._queue: queue.Queue[Future[_Deflated] | None] = queue.Queue(threads * _QUEUE_DEPTH)
        self._writer = threading.Thread(
            target=self._write_in_order, name="amibundle-gzip-out", daemon=True
        )
        self._finished = False
        # The member header: no name, no time (as isal and zlib-ng write it).
        sink.write(struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, 0, 255))
        self._writer.start()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._raise_error()
        view = memoryview(data).cast("B")
        while view:
            if self._filled == 0 and len(view) >= _BLOCK:
                self._submit(bytes(view[:_BLOCK]))  # a copy: callers reuse their buffers
                view = view[_BLOCK:]
                continue
            # Small writes are copied once, into the block a worker gets whole.
            n = min(len(view), _BLOCK - self._filled)
            self._block[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == _BLOCK:
                self._submit(self._block)
                self._block = bytearray(_BLOCK)
                self._filled = 0
        return len(data)

    def _submit(self, block: bytes | bytearray) -> None:
        future = self._pool.submit(self._deflate, block, self._dictionary)
        self._dictionary = bytes(block[-_WINDOW:])
        while True:  # a bounded queue: waits for the writer, never forever
            self._raise_error()
            try:
                self._queue.put(future, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _write_in_order(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    future = self._queue.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if future is None:
                    return
                data, crc, length = future.result()
                self._crc = self._engine.crc32_combine(self._crc, crc, length)
                self._size += length
                self._sink.write(data)
        except BaseException as err:  # handed to the calling thread
            self._error = err
            self._stop.set()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stop.is_set():
            raise RuntimeError("the compressor was aborted")

    def close(self) -> None:
        """Writes the last blocks, the final empty block and the trailer."""
        if self._finished:
            return
        try:
            if self._filled:
                self._submit(bytes(self._block[: self._filled]))
                self._filled = 0
            self._submit_end()
            self._writer.join()
            self._raise_error()
            self._sink.write(self._engine.compress(b"", wbits=-15))
            self._sink.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._pool.shutdown()

    def _submit_end(self) -> None:
        while self._writer.is_alive():
            try:
                self._queue.put(None, timeout=_POLL)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        """Stops every thread without writing anything more; safe to repeat."""
        self._finished = True
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._writer.is_alive() and threading.current_thread() is not self._writer:
            self._writer.join()


class _ZstdWriter:
    """zstd with libzstd's own worker threads, through a compressor object:
    output is taken per call, so an abort just stops calling."""

    def __init__(self, sink: RawSink, *, level: int, threads: int) -> None:
        self._sink = sink
        # A checksum per frame: damage is found by zstd itself, as gzip's CRC does.
        compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
        self._compressor = compressor.compressobj(size=-1)
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._done:
            raise RuntimeError("the compressor was closed")
        output = self._compressor.compress(data)
        if output:
            self._sink.write(output)
        return len(data)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._sink.write(self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH))

    def abort(self) -> None:
        self._done = True


def detect(head: bytes) -> Compression:
    """Which compression a decrypted stream uses, from its first bytes."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    raise IntegrityError(
        "the decrypted bundle is neither gzip nor zstd data: wrong key or damaged parts"
    )


def open_decompressor(kind: Compression, source: BinaryIO) -> BinaryIO:
    """A readable stream of the decompressed bytes of ``source``. Each
    ``read(n)`` returns at most ``n`` bytes, however well the input
    compresses (a small bomb never becomes a large buffer)."""
    if kind is Compression.GZIP:
        reader = igzip.GzipFile(fileobj=cast(Any, source), mode="rb")  # type: ignore[no-untyped-call]
        return cast(BinaryIO, reader)
    dctx = zstandard.ZstdDecompressor()
    checked = cast(BinaryIO, _ZstdFramesChecked(source))
    stream: BinaryIO = dctx.stream_reader(checked, read_across_frames=True, closefd=False)
    return stream


_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class _ZstdFramesChecked:
    """Passes a zstd stream through, following its frame and block headers,
    and raises at the end of input if it ends inside a frame: python-zstandard's
    stream reader ends quietly there, which would turn a truncated bundle into
    a confusing tar error. Only headers are parsed; block contents are skipped."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._want = 0  # bytes of content to skip before the next header
        self._header = bytearray()  # the header being gathered
        self._need = 4  # its length so far known (a frame starts with its magic)
        self._state = "magic"
        self._last_block = False
        self._checksum = False

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._follow(memoryview(data))
        elif self._state != "magic" or self._header or self._want:
            raise IntegrityError("the compressed stream inside the bundle is cut short")
        return data

    def readinto(self, buffer: memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def _follow(self, data: memoryview) -> None:
        while data:
            if self._want:
                skip = min(self._want, len(data))
                self._want -= skip
                data = data[skip:]
                if not self._want and self._state == "end":
                    self._state = "magic"
                continue
            take = min(self._need - len(self._header), len(data))
            self._header += data[:take]
            data = data[take:]
            if len(self._header) == self._need:
                self._parsed(bytes(self._header))

    def _parsed(self, header: bytes) -> None:
        self._header.clear()
        if self._state == "magic":
            magic = int.from_bytes(header, "little")
            if magic in _ZSTD_SKIPPABLE:
                self._state, self._need = "skip-size", 4
            elif magic == int.from_bytes(ZSTD_MAGIC, "little"):
                self._state, self._need = "descriptor", 1
            else:
                raise IntegrityError("the compressed stream inside the bundle is damaged")
        elif self._state == "skip-size":
            self._want = int.from_bytes(header, "little")
            self._state, self._need = "end", 4
            if not self._want:
                self._state = "magic"
        elif self._state == "descriptor":
            self._state, self._need = "frame-header", _frame_header_size(header[0])
            self._checksum = bool(header[0] & 0x04)
            if self._need == 0:
                self._state, self._need = "block", 3
        elif self._state == "frame-header":
            self._state, self._need = "block", 3
        elif self._state == "block":
            value = int.from_bytes(header, "little")
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                raise IntegrityError("the compressed stream inside the bundle is damaged")
            self._want = 1 if kind == 1 else size
            if value & 1:  # the last block of the frame
                self._state = "end"
                if self._checksum:
                    self._want += 4
                if not self._want:
                    self._state = "magic"
            self._need = 3 if self._state == "block" else 4


def _frame_header_size(descriptor: int) -> int:
    """Bytes of a zstd frame header after its descriptor byte (RFC 8878 3.1.1.1)."""
    single_segment = bool(descriptor & 0x20)
    content_size = (0, 2, 4, 8)[descriptor >> 6] or (1 if single_segment else 0)
    dictionary = (0, 1, 2, 4)[descriptor & 3]
    return (0 if single_segment else 1) + dictionary + content_size
