"""Images that arrive as a stream: compressed files, and standard input.

The tar header lists the image's size and every hole before the first data
byte, but a stream reveals both only at its end. So:

* A **compressed file** is decompressed twice. The first pass counts the
  size and finds the zero runs (aligned 64 KiB granules, as for plain
  files); the second streams the data extents into the bundle, checking
  that what lies between them is still zero and that the stream ends where
  the first pass said. Nothing is written to disk in between. Where the
  format records the size (the xz index, zstd frame headers) it is read
  first, so an image over EC2's limit is refused before any pass, and the
  pass is checked against it.
* A **pipe** (``-i -``) can be read only once: its size must be given
  (``image_size``) or recorded at its start (a zstd frame header), and it
  becomes a dense tar member; its zero runs are compressed, not holes
  (unbundling still writes them as holes). A stream shorter or longer than
  announced is an error before anything is committed.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import os
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO, cast

from amibundle.compression import DECOMPRESSION_ERRORS, Compression, open_decompressor
from amibundle.errors import AmibundleError, ImageSourceError, UsageError
from amibundle.format import compressed
from amibundle.format.tar import Extent
from amibundle.progress import Progress, Stage
from amibundle.sources.base import (
    ImageFormat,
    Layout,
    PrefixedStream,
    SequentialReader,
    SizeOrigin,
    SourceInfo,
    read_full,
    zero_scan,
)
from amibundle.sources.detect import HEAD_BYTES, is_tar, refuse_tree
from amibundle.validate import image_too_large

__all__ = ["CompressedFile", "PipeStream", "open_decompressed"]

_RAW_BUFFER = 1 << 20
_ERRORS: tuple[type[BaseException], ...] = (*DECOMPRESSION_ERRORS, lzma.LZMAError, ValueError)
_SIZE_DETAIL = {ImageFormat.XZ: "the xz index", ImageFormat.ZSTD: "the zstd frame headers"}


def open_decompressed(kind: ImageFormat, raw: BinaryIO) -> BinaryIO:
    """A readable stream of the decompressed bytes of ``raw`` (gzip and zstd
    decompress in a thread of their own; bzip2 and xz release the GIL)."""
    if kind is ImageFormat.GZIP:
        return open_decompressor(Compression.GZIP, raw)
    if kind is ImageFormat.ZSTD:
        return open_decompressor(Compression.ZSTD, raw)
    if kind is ImageFormat.BZIP2:
        return cast(BinaryIO, bz2.BZ2File(raw, "rb"))
    if kind is ImageFormat.XZ:
        return cast(BinaryIO, lzma.LZMAFile(raw, "rb"))
    raise ValueError(f"{kind} is not a compression")


def _damage_errors(label: str, kind: ImageFormat) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def mapping() -> Iterator[None]:
        try:
            yield
        except AmibundleError:
            raise
        except _ERRORS as err:
            raise ImageSourceError(
                f"cannot read {label}: its {kind.value} data is damaged or cut short ({err})"
            ) from None

    return mapping()


class CompressedFile:
    """A gzip, bzip2, xz or zstd file, decompressed on the fly (twice)."""

    def __init__(self, fd: int, label: str, kind: ImageFormat, *, image_size: int | None) -> None:
        self._fd = fd
        self._label = label
        self._kind = kind
        st = os.fstat(fd)
        recorded = self._recorded_size(st.st_size)
        if recorded is not None and image_size is not None and recorded != image_size:
            raise UsageError(
                f"{{param}} is {image_size}, but {_SIZE_DETAIL[kind]} of {label} says "
                f"{recorded} bytes",
                param="image_size",
            )
        size = recorded if recorded is not None else image_size
        origin = SizeOrigin.FORMAT if recorded is not None else SizeOrigin.GIVEN
        self._info = SourceInfo(
            label=label,
            format=kind,
            size=size,
            size_origin=None if size is None else origin,
            size_detail=_SIZE_DETAIL[kind] if recorded is not None else "",
            passes=2,
            mode=st.st_mode & 0o7777,
            mtime=int(st.st_mtime),
        )
        self._layout: Layout | None = None
        with self._stream() as stream:
            self._refuse_tar(stream)

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def reader(self) -> CompressedFile:
        return self

    def _recorded_size(self, file_size: int) -> int | None:
        def read_at(offset: int, length: int) -> bytes:
            return os.pread(self._fd, length, offset)

        if self._kind is ImageFormat.XZ:
            return compressed.xz_uncompressed_size(read_at, file_size)
        if self._kind is ImageFormat.ZSTD:
            return compressed.zstd_content_size(read_at, file_size)
        return None  # gzip keeps only the size modulo 4 GiB of its last member; bzip2 none

    @contextlib.contextmanager
    def _stream(self) -> Iterator[BinaryIO]:
        raw = io.FileIO(os.dup(self._fd), "rb")
        raw.seek(0)
        buffered = io.BufferedReader(raw, _RAW_BUFFER)
        try:
            with self._errors():
                stream = open_decompressed(self._kind, cast(BinaryIO, buffered))
            try:
                yield stream
            finally:
                with contextlib.suppress(*_ERRORS):
                    stream.close()
        finally:
            buffered.close()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return _damage_errors(self._label, self._kind)

    def _refuse_tar(self, stream: BinaryIO) -> None:
        head = bytearray(HEAD_BYTES)
        with self._errors():
            n = read_full(stream, memoryview(head))
        if is_tar(bytes(head[:n])):
            raise refuse_tree(self._label, f"a {self._kind.value}-compressed tar archive")

    def layout(self, progress: Progress, size_limit: int | None) -> Layout:
        known = self._info.size
        if known is not None and size_limit is not None and known > size_limit:
            raise image_too_large(known)
        progress.start(Stage.SCAN, known)
        try:
            with self._stream() as stream:
                size, extents = zero_scan(
                    stream,
                    label=self._label,
                    errors=self._errors,
                    progress_step=lambda n: progress.advance(Stage.SCAN, n),
                    size_limit=size_limit,
                )
        except BaseException as err:
            progress.finish(Stage.SCAN, err)
            raise
        progress.finish(Stage.SCAN)
        if known is not None and size != known:
            if self._info.size_origin is SizeOrigin.GIVEN:
                raise UsageError(
                    f"{{param}} is {known}, but {self._label} decompresses to {size} bytes",
                    param="image_size",
                )
            raise ImageSourceError(
                f"{self._label} decompresses to {size} bytes, but {self._info.size_detail} "
                f"says {known}"
            )
        dense = extents == [Extent(0, size)] or size == 0
        origin = self._info.size_origin or SizeOrigin.COUNTED
        self._layout = Layout(size, None if dense else extents, origin)
        return self._layout

    def read_extents(
        self, extents: Iterable[Extent], buffers: Iterator[bytearray]
    ) -> Iterator[memoryview]:
        if self._layout is None:
            raise RuntimeError("layout() first: the tar header needs it")
        with self._stream() as stream:
            reader = SequentialReader(stream, self._layout.size, self._label, self._errors)
            yield from reader.extents(extents, buffers)

    def close(self) -> None:
        os.close(self._fd)


class PipeStream:
    """An image read once from a pipe (standard input), plain or compressed."""

    def __init__(
        self, raw: BinaryIO, label: str, head: bytes, kind: ImageFormat, *, image_size: int | None
    ) -> None:
        self._raw = raw
        self._label = label
        self._kind = kind
        stream: BinaryIO = PrefixedStream(head, raw)  # type: ignore[assignment]
        size, origin, detail = image_size, SizeOrigin.GIVEN, ""
        if kind is not ImageFormat.RAW:
            with self._errors():
                stream = open_decompressed(kind, stream)
            recorded = compressed.zstd_first_frame_size(head) if kind is ImageFormat.ZSTD else None
            if image_size is None and recorded is not None:
                size, origin, detail = recorded, SizeOrigin.FORMAT, "the zstd frame header"
            with self._errors():
                head = stream.read(HEAD_BYTES)
            stream = PrefixedStream(head, stream)  # type: ignore[assignment]
        if is_tar(head):
            what = "a tar archive" if kind is ImageFormat.RAW else f"a {kind.value} tar archive"
            raise refuse_tree(label, what)
        if size is None:
            raise UsageError(
                f"{{param}} is needed to read an image from {label}: the tar header states "
                "the size before the data, and a pipe cannot be read twice",
                hint="give the size in bytes, or the image as a file",
                param="image_size",
            )
        self._stream = stream
        self._info = SourceInfo(
            label=label,
            format=kind,
            size=size,
            size_origin=origin,
            size_detail=detail,
            passes=1,
            mode=0o644,
            mtime=int(time.time()),
        )
        self._used = False

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def reader(self) -> PipeStream:
        return self

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        if self._kind is ImageFormat.RAW:
            return _read_errors(self._label)
        return _damage_errors(self._label, self._kind)

    def layout(self, progress: Progress, size_limit: int | None) -> Layout:
        size = self._info.size
        assert size is not None and self._info.size_origin is not None
        if size_limit is not None and size > size_limit:
            raise image_too_large(size)
        return Layout(size, None, self._info.size_origin)

    def read_extents(
        self, extents: Iterable[Extent], buffers: Iterator[bytearray]
    ) -> Iterator[memoryview]:
        if self._used:
            raise RuntimeError("a pipe can be read only once")
        self._used = True
        size = self._info.size
        assert size is not None
        reader = SequentialReader(self._stream, size, self._label, self._errors)
        yield from reader.extents(extents, buffers)

    def close(self) -> None:
        with contextlib.suppress(*_ERRORS):
            self._stream.close()
        self._raw.close()


@contextlib.contextmanager
def _read_errors(label: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise ImageSourceError(f"cannot read {label}: {err.strerror or err}") from None
