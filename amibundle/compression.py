"""The compression stage: gzip (what EC2 reads) or zstd (bundles that never
go to EC2), both multi-threaded, both a single stream.

gzip uses ISA-L's pigz-style writer: blocks are deflated in parallel with the
previous 32 KiB as dictionary and joined into ONE ordinary gzip member, the
form every gunzip and EC2 read. Readers detect the format from magic bytes.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import BinaryIO, Protocol, cast

import zstandard
from isal import igzip_threaded, isal_zlib

from amibundle.errors import IntegrityError, UsageError

__all__ = [
    "DECOMPRESSION_ERRORS",
    "Compression",
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


def _isal_level(level: int) -> int:
    # ISA-L has levels 0-3; the public scale is gzip's 1-9.
    if not 1 <= level <= 9:
        raise UsageError(f"compression level must be 1 to 9, not {level}")
    return min(3, (level + 2) // 3)


def open_compressor(kind: Compression, level: int, threads: int, sink: RawSink) -> BinaryIO:
    """A writable stream that compresses into ``sink``. Closing it finishes
    the stream (and stops its threads, also after an error)."""
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    if kind is Compression.GZIP:
        writer: BinaryIO = igzip_threaded.open(  # type: ignore[no-untyped-call]
            sink, "wb", compresslevel=_isal_level(level), threads=threads, block_size=_BLOCK
        )
        return writer
    if not 1 <= level <= 22:
        raise UsageError(f"zstd level must be 1 to 22, not {level}")
    compressor = zstandard.ZstdCompressor(level=level, threads=threads)
    stream: BinaryIO = compressor.stream_writer(
        cast(BinaryIO, sink), closefd=False, write_size=_BLOCK
    )
    return stream


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
