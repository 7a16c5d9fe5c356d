"""What every image source shares: its format, what is known before reading,
the layout the tar header needs, and reading a stream in order.

A source is opened once (:func:`amibundle.sources.open_source`); its
:meth:`ImageSource.layout` finds the image's size and data extents (a first
pass where the format does not say), and :attr:`ImageSource.reader` then
hands the bundling pipeline the bytes of those extents.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import BinaryIO, Protocol

from amibundle.errors import ImageSourceError
from amibundle.format.tar import Extent, ExtentMap
from amibundle.progress import Progress
from amibundle.sparse import ZERO_GRANULE, ExtentReader, is_zero
from amibundle.validate import image_too_large

__all__ = [
    "COMPRESSED",
    "DISK_FORMATS",
    "ImageFormat",
    "ImageSource",
    "Layout",
    "PrefixedStream",
    "SequentialReader",
    "SizeOrigin",
    "SourceInfo",
    "read_full",
    "zero_scan",
]


class ImageFormat(str, Enum):
    """What an image file holds, as recognised by its first (or last) bytes."""

    RAW = "raw"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VHD = "vhd"
    VHDX = "vhdx"


COMPRESSED = frozenset({ImageFormat.GZIP, ImageFormat.BZIP2, ImageFormat.XZ, ImageFormat.ZSTD})
DISK_FORMATS = frozenset({ImageFormat.QCOW2, ImageFormat.VMDK, ImageFormat.VHD, ImageFormat.VHDX})


class SizeOrigin(str, Enum):
    """Where the image size came from."""

    FILE = "file size"
    FORMAT = "format"  # the xz index, zstd frame headers, the disk format (qemu-img)
    GIVEN = "image_size"  # the caller said so (a pipe has no size)
    COUNTED = "first pass"  # a first pass over the decompressed stream counted it


@dataclass(frozen=True)
class SourceInfo:
    """What is known about an image before its data is read."""

    label: str  # the path, or "standard input"
    format: ImageFormat
    size: int | None  # None: a first pass will count it
    size_origin: SizeOrigin | None
    size_detail: str  # where in the format, e.g. "the xz index"; "" when not from it
    passes: int  # how often the data is read (decompressed) in all: 1 or 2
    mode: int  # permission bits for the tar member
    mtime: int


@dataclass(frozen=True)
class Layout:
    """What the tar header needs: the size and where the data is."""

    size: int
    extents: Sequence[Extent] | None  # None: dense (every byte is data); an ExtentMap
    size_origin: SizeOrigin


class ImageSource(Protocol):
    """An open image of any format."""

    @property
    def info(self) -> SourceInfo: ...

    @property
    def reader(self) -> int | ExtentReader:
        """A file descriptor to pread (plain files) or a reader of extents."""

    def layout(self, progress: Progress, size_limit: int | None) -> Layout:
        """The size and data extents; ``size_limit`` stops a first pass early
        once the image is known to be larger (an error)."""

    def close(self) -> None: ...


# --- reading streams ---------------------------------------------------------------------

ErrorMapper = Callable[[], contextlib.AbstractContextManager[None]]  # turns read errors into ours


def read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fills ``view`` from ``stream``; fewer bytes only at the end of the stream."""
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            break
        filled += n
    return filled


class PrefixedStream:
    """``head`` (bytes already read to recognise the format), then ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readinto(self, buffer: memoryview | bytearray) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            memoryview(buffer)[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return int(self._rest.readinto(buffer))  # type: ignore[attr-defined]

    def read(self, size: int = -1) -> bytes:
        if self._head:
            n = len(self._head) if size < 0 else min(size, len(self._head))
            data = self._head[:n].tobytes()
            self._head = self._head[n:]
            return data
        return self._rest.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._rest.close()


class SequentialReader:
    """Reads a stream from its start, handing out the bytes of extents in
    order and checking that everything between them is zero (it was, on the
    first pass: anything else means the input changed) and that the stream
    ends exactly at ``size``."""

    def __init__(self, stream: BinaryIO, size: int, label: str, errors: ErrorMapper) -> None:
        self._stream = stream
        self._size = size
        self._label = label
        self._errors = errors
        self._pos = 0
        self._scratch = memoryview(bytearray(ZERO_GRANULE))

    def extents(
        self, extents: Iterable[Extent], buffers: Iterator[bytearray]
    ) -> Iterator[memoryview]:
        for extent in extents:
            self._skip_zeros(extent.offset)
            remaining = extent.length
            while remaining:
                view = memoryview(next(buffers))[:remaining]
                self._read_exact(view)
                remaining -= len(view)
                yield view
        self._skip_zeros(self._size)
        self._expect_end()

    def _read_exact(self, view: memoryview) -> None:
        with self._errors():
            n = read_full(self._stream, view)
        self._pos += n
        if n < len(view):
            raise ImageSourceError(
                f"{self._label} ended after {self._pos} bytes, but its size is {self._size}"
            )

    def _skip_zeros(self, until: int) -> None:
        while self._pos < until:
            view = self._scratch[: min(len(self._scratch), until - self._pos)]
            self._read_exact(view)
            if not is_zero(view):
                raise ImageSourceError(
                    f"{self._label} changed while it was being read (data where the first "
                    "pass found zeros)"
                )

    def _expect_end(self) -> None:
        with self._errors():
            extra = self._stream.read(1)
        if extra:
            raise ImageSourceError(
                f"{self._label} holds more than {self._size} bytes, the size announced"
            )


def zero_scan(
    stream: BinaryIO,
    *,
    label: str,
    errors: ErrorMapper,
    progress_step: Callable[[int], None],
    size_limit: int | None,
) -> tuple[int, ExtentMap]:
    """One pass over ``stream``: its size and its data extents (aligned
    granules of zeros left out), as :func:`amibundle.sparse.carve_zero_runs`
    finds them in a file."""
    buffer = memoryview(bytearray(16 * ZERO_GRANULE))
    extents = ExtentMap()  # 16 bytes an extent, however many zero runs there are
    start: int | None = None  # where the data run being collected began
    offset = 0
    while True:
        with errors():
            n = read_full(stream, buffer)
        for granule in range(0, n, ZERO_GRANULE):
            at = offset + granule
            if is_zero(buffer[granule : min(granule + ZERO_GRANULE, n)]):
                if start is not None:
                    extents.append(start, at - start)
                    start = None
            elif start is None:
                start = at
        offset += n
        progress_step(n)
        if size_limit is not None and offset > size_limit:
            raise image_too_large(offset, at_least=True)
        if n < len(buffer):
            break
    if start is not None:
        extents.append(start, offset - start)
    return offset, extents
