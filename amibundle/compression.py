"""The compression stage: gzip (what EC2 reads) or zstd (bundles that never
go to EC2), both multi-threaded, both a single stream.

gzip is written pigz-style: blocks are deflated in parallel, each with the
previous 32 KiB as dictionary, and joined into ONE ordinary gzip member, the
form every gunzip and EC2 read. Levels 1-3 use ISA-L (the fastest deflate
there is: 330-450 MB/s a core at level 2 on root file systems), levels 4-9
zlib-ng (better ratios, ~100 MB/s a core). The default, 2, is the fastest
level whose output stays within 15% of ``gzip -9`` on such data (14.8% on
the benchmark's 1.2 GB of /usr files; see benchmarks/README.md).

Readers detect the format from its magic bytes.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any, BinaryIO, Protocol, cast

import zstandard
from isal import igzip_threaded, isal_zlib
from zlib_ng import gzip_ng_threaded

from amibundle.errors import IntegrityError, UsageError

__all__ = [
    "DECOMPRESSION_ERRORS",
    "DEFAULT_LEVELS",
    "LEVEL_RANGES",
    "Compression",
    "check_level",
    "GZIP_MAGIC",
    "ZSTD_MAGIC",
    "RawSink",
    "default_threads",
    "detect",
    "open_compressor",
    "open_decompressor",
]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BLOCK = 1 << 20
# What the decompressors raise for damaged input.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    cast(type[BaseException], isal_zlib.error),  # typed as an instance in its stubs
    zstandard.ZstdError,
)


class Compression(str, Enum):
    GZIP = "gzip"
    ZSTD = "zstd"


class RawSink(Protocol):
    """Where compressed bytes go (the encryption stage)."""

    def write(self, data: bytes | memoryview) -> int: ...
    def flush(self) -> None: ...


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


def open_compressor(kind: Compression, level: int | None, threads: int, sink: RawSink) -> BinaryIO:
    """A writable stream that compresses into ``sink``. Closing it finishes
    the stream (and stops its threads, also after an error)."""
    if threads < 1:
        raise UsageError(f"{{param}} must be at least 1, not {threads}", param="threads")
    level = check_level(kind, level)
    if kind is Compression.GZIP:
        engine = igzip_threaded if level in _ISAL_LEVELS else gzip_ng_threaded
        return _threaded_gzip_writer(engine, sink, level, threads)
    compressor = zstandard.ZstdCompressor(level=level, threads=threads)
    stream: BinaryIO = compressor.stream_writer(
        cast(BinaryIO, sink), closefd=False, write_size=_BLOCK
    )
    return stream


# Blocks queued per compression thread. The libraries' open() queues one, so a
# worker that finishes early waits for the reader to reach its turn in the
# round robin; four keep both cores busy (about 182% CPU instead of 178%
# while bundling the benchmark image, and 3-4% faster) for 4 MiB a thread.
_QUEUE_DEPTH = 4


def _threaded_gzip_writer(engine: Any, sink: RawSink, level: int, threads: int) -> BinaryIO:
    """``engine.open(sink, "wb", ...)`` with a deeper work queue. The queue
    depth is a parameter of the writer class (same in isal and zlib-ng) that
    open() does not pass on; if a future version drops it, use open()."""
    try:
        raw = engine._ThreadedGzipWriter(
            sink, level=level, threads=threads, queue_size=_QUEUE_DEPTH, block_size=_BLOCK
        )
    except (AttributeError, TypeError):
        writer: BinaryIO = engine.open(
            sink, "wb", compresslevel=level, threads=threads, block_size=_BLOCK
        )
        return writer
    buffered: BinaryIO = engine.FlushableBufferedWriter(raw, buffer_size=_BLOCK)
    return buffered


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
    """A readable stream of the decompressed bytes of ``source``; decompression
    runs in a background thread so it overlaps the stages around it."""
    if kind is Compression.GZIP:
        reader: BinaryIO = igzip_threaded.open(  # type: ignore[no-untyped-call]
            source, "rb", threads=1, block_size=_BLOCK
        )
        return reader
    dctx = zstandard.ZstdDecompressor()
    stream: BinaryIO = dctx.stream_reader(source, read_across_frames=True, closefd=False)
    return stream
