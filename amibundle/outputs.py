"""Where an unbundled image can go besides a new sparse file: a stream, or an
existing block device or file written whole.

Both are :class:`~amibundle.pipeline.MemberWriter`s, fed the image's data
pieces in order of offset. Neither can take back what it wrote, so each
keeps :attr:`written`: every byte before it has been written (data, or
zeros for holes), which a failure reports.

* :class:`StreamWriter`: a pipe or standard output (``| dd``, ``| qemu-img
  dd``); holes are written as zeros.
* :class:`DeviceWriter`: an existing block device (an EBS volume attached to
  the instance, as AWS documents for moving an image onto one) or file.
  Every block of the image is written; a hole becomes zeros by the cheapest
  means the target takes: ``BLKZEROOUT`` on a block device, a punched hole
  (``fallocate``) in a file, else plain zero writes. A file is cut to the
  image's size; a device must be at least that large, and the rest of it is
  left as it was.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from amibundle.errors import StorageError, UsageError
from amibundle.files import pwrite_all

__all__ = ["DeviceWriter", "StreamWriter", "open_device"]

_ZEROS = bytes(1 << 20)
_BLKZEROOUT = 0x127F  # _IO(0x12, 127): zero a byte range of a block device
_BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)
_SECTOR = 512  # BLKZEROOUT ranges are whole 512-byte sectors
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


class StreamWriter:
    """Writes the image to a stream front to back, holes as zeros."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self._stream = stream
        self._name = name
        self.written = 0

    def _put(self, data: bytes | memoryview) -> None:
        try:
            self._stream.write(data)
        except OSError as err:
            raise StorageError(f"cannot write to {self._name}: {err.strerror or err}") from None
        self.written += len(data)

    def _zeros_to(self, end: int) -> None:
        while self.written < end:
            self._put(memoryview(_ZEROS)[: min(len(_ZEROS), end - self.written)])

    def write(self, offset: int, data: memoryview) -> None:
        if offset < self.written:
            raise StorageError(f"the image's data is out of order at byte {offset}")
        self._zeros_to(offset)
        self._put(data)

    def finish(self, size: int) -> None:
        self._zeros_to(size)
        try:
            self._stream.flush()
        except OSError as err:
            raise StorageError(f"cannot write to {self._name}: {err.strerror or err}") from None


def open_device(path: Path, size: int) -> tuple[int, bool]:
    """Opens an existing block device or regular file for writing the image
    (``size`` bytes) over it: (fd, is a block device). A block device is
    opened exclusively (refused while mounted) and must hold ``size`` bytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{{param}} {path} does not exist", param="device") from None
    except OSError as err:
        raise StorageError(f"cannot use {path}: {err.strerror}") from None
    block = stat.S_ISBLK(st.st_mode)
    if not block and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{{param}} {path} is neither a block device nor a file", param="device")
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_EXCL if block else 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        busy = " (it is in use: mounted, or open elsewhere)" if err.errno == errno.EBUSY else ""
        raise StorageError(f"cannot open {path} for writing: {err.strerror}{busy}") from None
    if block:
        capacity = _device_size(fd)
        if capacity < size:
            os.close(fd)
            raise UsageError(
                f"{{param}} {path} holds {capacity} bytes; the image needs {size}",
                param="device",
            )
    return fd, block


def _device_size(fd: int) -> int:
    try:
        answer = fcntl.ioctl(fd, _BLKGETSIZE64, b"\0" * 8)
        return int(struct.unpack("Q", answer)[0])
    except OSError:
        return os.lseek(fd, 0, os.SEEK_END)


def _fallocate() -> Callable[[int, int, int, int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        function = libc.fallocate64
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    punch: Callable[[int, int, int, int], int] = function
    return punch


class DeviceWriter:
    """Writes the image over an open block device or file (see the module)."""

    def __init__(self, fd: int, name: str, *, block_device: bool) -> None:
        self._fd = fd
        self._name = name
        self._block = block_device
        # Each way of zeroing is tried once; the first refusal turns it off.
        self._zero_out = block_device
        self._punch = _fallocate() if not block_device else None
        self.written = 0

    def _pwrite(self, data: memoryview, offset: int) -> None:
        pwrite_all(self._fd, data, offset, self._name)

    def _zero(self, start: int, end: int) -> None:
        """Makes bytes ``start`` to ``end`` zero."""
        if start >= end:
            return
        if self._zero_out:
            inner_start = -(-start // _SECTOR) * _SECTOR
            inner_end = end // _SECTOR * _SECTOR
            if inner_end > inner_start and self._ioctl_zero(inner_start, inner_end):
                self._write_zeros(start, inner_start)
                self._write_zeros(inner_end, end)
                return
        if self._punch is not None and self._punch_hole(start, end):
            return
        self._write_zeros(start, end)

    def _ioctl_zero(self, start: int, end: int) -> bool:
        try:
            fcntl.ioctl(self._fd, _BLKZEROOUT, struct.pack("QQ", start, end - start))
        except OSError:
            self._zero_out = False
            return False
        return True

    def _punch_hole(self, start: int, end: int) -> bool:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        punch = self._punch
        if punch is not None and punch(self._fd, mode, start, end - start) == 0:
            return True
        self._punch = None
        return False

    def _write_zeros(self, start: int, end: int) -> None:
        while start < end:
            length = min(len(_ZEROS), end - start)
            self._pwrite(memoryview(_ZEROS)[:length], start)
            start += length

    def write(self, offset: int, data: memoryview) -> None:
        if offset < self.written:
            raise StorageError(f"the image's data is out of order at byte {offset}")
        self._zero(self.written, offset)
        self._pwrite(data, offset)
        self.written = offset + len(data)

    def finish(self, size: int) -> None:
        self._zero(self.written, size)
        try:
            if not self._block:
                os.ftruncate(self._fd, size)  # a longer file would not equal the image
            os.fsync(self._fd)  # a device's write errors surface here, not after exit
        except OSError as err:
            raise StorageError(f"cannot write {self._name}: {err.strerror}") from None
        self.written = size
