"""Sparse files: finding an image's data, and writing an image back sparse.

Bundling never reads a hole: :func:`data_extents` asks the file system for
the data regions (``SEEK_DATA``/``SEEK_HOLE``). Inside data, whole aligned
runs of zeros (:data:`ZERO_GRANULE` bytes) become holes of the tar member too
(:func:`carve_zero_runs`), so a dense image made with ``dd`` bundles and
unbundles as compactly as a sparse one.

The tar header must list every hole before the first data byte, so the zero
scan runs ahead of the stream; it reads two bytes of most granules and whole
granules only where those are zero, so the stream's read is the one real
pass over the image.

Unbundling writes through :class:`SparseWriter`, which seeks over holes and
over zero granules instead of writing them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from typing import Protocol

from amibundle.errors import StorageError
from amibundle.files import pwrite_all
from amibundle.format.tar import Extent, ExtentMap

__all__ = [
    "ZERO_GRANULE",
    "ExtentReader",
    "SparseWriter",
    "carve_zero_runs",
    "data_extents",
    "is_zero",
    "read_extents",
    "read_image_extents",
]

ZERO_GRANULE = 64 * 1024
_ZEROS = bytes(ZERO_GRANULE)
_PROBE = 4096  # bytes read first to rule a granule out
_READ_CHUNK = 1 << 20


def data_extents(fd: int, size: int) -> ExtentMap:
    """The data regions of an open file, holes left out. File systems without
    ``SEEK_DATA`` report the whole file as data."""
    extents = ExtentMap()
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as err:
                if err.errno == errno.ENXIO:  # only a hole remains
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end > start:
                extents.append(start, end - start)
            offset = end
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return ExtentMap([Extent(0, size)] if size else [])
        raise
    return extents


def _subtract(extent: Extent, holes: list[tuple[int, int]]) -> Iterator[Extent]:
    cursor = extent.offset
    for start, end in holes:
        if start > cursor:
            yield Extent(cursor, start - cursor)
        cursor = end
    end_of_extent = extent.offset + extent.length
    if end_of_extent > cursor:
        yield Extent(cursor, end_of_extent - cursor)


def carve_zero_runs(fd: int, extents: Iterable[Extent]) -> ExtentMap:
    """``extents`` with every aligned all-zero granule inside them removed.

    A granule whose first 4 KiB are not all zero is data: that settles nearly
    every granule of real data by reading a sixteenth of it. Only granules
    that pass the test are read whole and compared.
    """
    carved = ExtentMap()
    for extent in extents:
        holes: list[tuple[int, int]] = []
        end = extent.offset + extent.length
        first = extent.offset + (-extent.offset % ZERO_GRANULE)
        for start in range(first, end - ZERO_GRANULE + 1, ZERO_GRANULE):
            if not _granule_is_zero(fd, start):
                continue
            if holes and holes[-1][1] == start:
                holes[-1] = (holes[-1][0], start + ZERO_GRANULE)
            else:
                holes.append((start, start + ZERO_GRANULE))
        for piece in _subtract(extent, holes):
            carved.append(piece.offset, piece.length)
    return carved


def _granule_is_zero(fd: int, start: int) -> bool:
    if _pread_exact(fd, _PROBE, start) != _ZEROS[:_PROBE]:
        return False
    return _pread_exact(fd, ZERO_GRANULE, start) == _ZEROS


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise StorageError("the image changed size while it was being read")
    return data


def _chunks(extent: Extent) -> Iterator[tuple[int, int]]:
    """(offset, length) pieces of at most one read, aligned to the granule so
    that no zero granule straddles two reads."""
    offset, end = extent.offset, extent.offset + extent.length
    while offset < end:
        limit = (offset // _READ_CHUNK + 1) * _READ_CHUNK
        length = min(end, limit) - offset
        yield offset, length
        offset += length


def read_extents(
    fd: int, extents: Iterable[Extent], buffers: Iterator[bytearray]
) -> Iterator[memoryview]:
    """The bytes of ``extents`` in order, read into buffers taken from
    ``buffers`` (so the caller controls reuse and how many are in flight)."""
    for extent in extents:
        for offset, length in _chunks(extent):
            buf = next(buffers)
            view = memoryview(buf)[:length]
            if os.preadv(fd, [view], offset) != length:
                raise StorageError("the image changed size while it was being read")
            yield view


class ExtentReader(Protocol):
    """An image that is not a plain file (a compressed stream, a disk format
    read through qemu-img): it hands out the bytes of given extents, in
    order, like :func:`read_extents` does for a file descriptor."""

    def read_extents(
        self, extents: Iterable[Extent], buffers: Iterator[bytearray]
    ) -> Iterator[memoryview]: ...


def read_image_extents(
    image: int | ExtentReader, extents: Iterable[Extent], buffers: Iterator[bytearray]
) -> Iterator[memoryview]:
    """:func:`read_extents` for a file descriptor, the reader's own otherwise."""
    if isinstance(image, int):
        return read_extents(image, extents, buffers)
    return image.read_extents(extents, buffers)


class SparseWriter:
    """Writes (offset, data) pieces into a new file, leaving holes where the
    data is zero. Pieces closer than a file system block to the one before
    are joined (the gap written as zeros: that block is allocated anyway), so
    a member of millions of tiny extents costs few system calls.
    :meth:`finish` writes what is pending and sets the final size."""

    _JOIN_GAP = 4096  # a smaller gap cannot be a hole
    _JOIN_LIMIT = 1 << 20  # join pieces into writes of at most this much

    def __init__(self, fd: int, path_for_errors: str) -> None:
        self._fd = fd
        self._path = path_for_errors
        self._pending = bytearray()
        self._pending_at = 0

    def write(self, offset: int, data: memoryview) -> None:
        end = self._pending_at + len(self._pending)
        if (
            self._pending
            and 0 <= offset - end < self._JOIN_GAP
            and (len(self._pending) + len(data) <= self._JOIN_LIMIT)
        ):
            self._pending += bytes(offset - end)
            self._pending += data
            return
        self._flush()
        if len(data) >= self._JOIN_LIMIT:
            self._write_sparse(offset, data)
        else:
            self._pending_at = offset
            self._pending += data

    def _flush(self) -> None:
        if self._pending:
            self._write_sparse(self._pending_at, memoryview(self._pending))
            self._pending = bytearray()

    def _write_sparse(self, offset: int, data: memoryview) -> None:
        start = 0  # first byte of ``data`` not written yet
        first = -offset % ZERO_GRANULE  # granules are aligned to file offsets
        for i in range(first, len(data) - ZERO_GRANULE + 1, ZERO_GRANULE):
            if _is_zero_granule(data, i):
                self._pwrite(data[start:i], offset + start)
                start = i + ZERO_GRANULE
        self._pwrite(data[start:], offset + start)

    def _pwrite(self, data: memoryview, offset: int) -> None:
        pwrite_all(self._fd, data, offset, self._path)

    def finish(self, size: int) -> None:
        self._flush()
        try:
            os.ftruncate(self._fd, size)
        except OSError as err:
            raise StorageError(f"cannot write {self._path}: {err.strerror}") from None


def _is_zero_granule(view: memoryview, start: int) -> bool:
    return is_zero(view[start : start + ZERO_GRANULE])


def is_zero(view: memoryview) -> bool:
    """Whether every byte of ``view`` (at most :data:`ZERO_GRANULE` long) is zero."""
    # Most data granules begin or end with a non-zero byte, which settles it
    # without touching the rest; otherwise compare all of it (bytes == bytes
    # is a memcmp, memoryview == memoryview goes item by item, 20x slower).
    if not view:
        return True
    if view[0] or view[-1]:
        return False
    return view.tobytes() == _ZEROS[: len(view)]
