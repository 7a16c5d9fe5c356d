"""Image sources: whatever ``bundle_image`` is given, as one kind of thing.

:func:`open_source` recognises the image by its content and returns an
:class:`~amibundle.sources.base.ImageSource`:

========================  ==========================================  =============
input                     read by                                      holes from
========================  ==========================================  =============
raw file                  pread (:mod:`.plain`)                        SEEK_DATA + zero scan
gzip, bzip2, xz, zstd     decompressed twice (:mod:`.streams`)         the first pass
standard input (a pipe)   read once (:mod:`.streams`)                  none (dense)
qcow2, VMDK, VHD, VHDX    qemu-img, window by window (:mod:`.qemu`)    ``qemu-img map``
========================  ==========================================  =============

Standard input that is a regular file (``-i - < root.img``) is read like
that file. A folder or a tar archive is refused, pointing at bundle-vol. A
path is opened as every input is (:func:`amibundle.files.open_input`):
without blocking, and refused at once unless it is a regular file, so a
FIFO or a device never makes bundling wait.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from amibundle.errors import StorageError, UsageError
from amibundle.files import open_input
from amibundle.sources.base import (
    COMPRESSED,
    DISK_FORMATS,
    ImageFormat,
    ImageSource,
    Layout,
    SizeOrigin,
    SourceInfo,
)
from amibundle.sources.detect import HEAD_BYTES, TAIL_BYTES, format_of, is_tar, refuse_tree
from amibundle.sources.plain import PlainFile
from amibundle.sources.qemu import QemuImage
from amibundle.sources.streams import CompressedFile, PipeStream

__all__ = [
    "STDIN",
    "ImageFormat",
    "ImageSource",
    "Layout",
    "SizeOrigin",
    "SourceInfo",
    "describe",
    "file_format",
    "open_source",
]

STDIN = "-"
STDIN_LABEL = "standard input"
_PIPE_BUFFER = 1 << 20


def open_source(
    image: Path | str,
    *,
    image_format: ImageFormat | None = None,
    image_size: int | None = None,
) -> ImageSource:
    """Opens ``image`` (a path, or ``"-"`` for standard input) as the source
    its content says (``image_format`` forces one). ``image_size`` is the
    size of a pipe's image (or a check of any other). Close it when done."""
    if str(image) == STDIN:
        return _open_stdin(image_format, image_size)
    path = Path(image)
    return _adopt(_open_file(path), str(path), path, image_format, image_size)


def file_format(image: Path) -> ImageFormat:
    """The format of the image file ``image``, by its content."""
    fd = _open_file(image)
    try:
        return format_of(*_head_and_tail(fd, os.fstat(fd).st_size))
    except OSError as err:
        raise StorageError(f"cannot read image {image}: {err.strerror}") from None
    finally:
        os.close(fd)


def _open_file(path: Path) -> int:
    """``path`` open for reading, checked as every input is: a folder gets a
    pointer at bundle-vol, a FIFO, device or socket an error at once."""
    if path.is_dir():
        raise refuse_tree(str(path), "a directory")
    try:
        return open_input(path, "image")
    except FileNotFoundError:
        raise UsageError(f"{{param}} {path} does not exist", param="image") from None
    except OSError as err:
        raise StorageError(f"cannot read image {path}: {err.strerror}") from None


def _head_and_tail(fd: int, size: int) -> tuple[bytes, bytes]:
    """The bytes formats are recognised by: the first and the last few hundred."""
    return os.pread(fd, HEAD_BYTES, 0), os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES))


def _open_stdin(image_format: ImageFormat | None, image_size: int | None) -> ImageSource:
    if os.isatty(0):  # nobody types an image: the pipe was forgotten
        raise UsageError(
            f"{{param}} - reads the image from {STDIN_LABEL}, which is a terminal here",
            hint="pipe the image in (... | amibundle bundle-image -i - --image-size SIZE ...) "
            "or give its path",
            param="image",
        )
    fd = os.dup(0)
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):  # `-i - < root.img`: as good as the file
        return _adopt(fd, STDIN_LABEL, None, image_format, image_size)
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise refuse_tree(STDIN_LABEL, "a directory")
    raw = io.BufferedReader(io.FileIO(fd, "rb"), _PIPE_BUFFER)
    try:
        head = raw.read(HEAD_BYTES)
        kind = image_format or format_of(head)
        if kind in DISK_FORMATS:
            raise UsageError(
                f"{{param}} {STDIN_LABEL} holds a {kind.value} image, which qemu-img reads "
                "only from a file: give its path",
                param="image",
            )
        return PipeStream(raw, STDIN_LABEL, head, kind, image_size=image_size)
    except BaseException:
        raw.close()
        raise


def _adopt(
    fd: int,
    label: str,
    path: Path | None,
    image_format: ImageFormat | None,
    image_size: int | None,
) -> ImageSource:
    """The source for a file open on ``fd`` (closed on any error)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{{param}} {label} is not a regular file", param="image")
        head, tail = _head_and_tail(fd, st.st_size)
        kind = image_format or format_of(head, tail)
        source = _source_for(fd, label, path, kind, head, st, image_size)
        if source.info.size is not None and image_size not in (None, source.info.size):
            raise UsageError(
                f"{{param}} is {image_size}, but {label} is {source.info.size} bytes",
                param="image_size",
            )
        return source
    except BaseException:
        os.close(fd)
        raise


def _source_for(
    fd: int,
    label: str,
    path: Path | None,
    kind: ImageFormat,
    head: bytes,
    st: os.stat_result,
    image_size: int | None,
) -> ImageSource:
    if kind in COMPRESSED:
        return CompressedFile(fd, label, kind, image_size=image_size)
    if kind in DISK_FORMATS:
        if path is None:
            raise UsageError(
                f"{{param}} {label} holds a {kind.value} image, which qemu-img reads only "
                "from a file named on the command line: give its path",
                param="image",
            )
        os.close(fd)  # qemu-img opens it by name
        return QemuImage(path, label, kind)
    if is_tar(head):
        raise refuse_tree(label, "a tar archive")
    return PlainFile(fd, label, st)


def describe(info: SourceInfo, layout: Layout | None = None) -> str:
    """One line saying how a non-raw image is read (for the user)."""
    size = layout.size if layout is not None else info.size
    origin = layout.size_origin if layout is not None else info.size_origin
    if size is None:
        amount = "size not recorded in the format: counted in a first pass"
    elif origin is SizeOrigin.GIVEN:
        amount = f"{size} bytes as given"
    elif origin is SizeOrigin.FORMAT:
        amount = f"{size} bytes according to {info.size_detail}"
    else:
        amount = f"{size} bytes"
    if info.format in COMPRESSED and info.passes == 2:
        how = (
            f"{info.format.value}-compressed, decompressed on the fly twice "
            "(a first pass finds the zero runs)"
        )
    elif info.format in COMPRESSED:
        how = f"{info.format.value}-compressed, decompressed on the fly"
    elif info.format in DISK_FORMATS:
        how = f"a {info.format.value} image, read through qemu-img (a first pass finds zero runs)"
    else:
        how = "read once, without holes (a pipe cannot be read twice)"
    return f"{info.label}: {how}; {amount}"
