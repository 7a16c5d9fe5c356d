"""The uncompressed size a compressed file records, where its format records it.

A tar header states the image size before the first data byte, so bundling a
compressed image wants that size up front. Two formats record it exactly:

* **xz**: every stream ends with an index listing each block's uncompressed
  size; walking the streams backwards from the end of the file (over the
  stream padding) sums them without decompressing anything.
* **zstd**: a frame header may carry the frame's content size; walking the
  frames over their block headers (3 bytes each) sums them. One frame
  without a content size makes the total unknown.

gzip records only the size modulo 2**32 of its last member, bzip2 nothing:
for them (and for anything malformed) the answer is None and the caller
counts. Readers take ``read_at(offset, length) -> bytes`` and the file size,
so they never hold more than a header or an index in memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["ReadAt", "xz_uncompressed_size", "zstd_content_size", "zstd_first_frame_size"]

ReadAt = Callable[[int, int], bytes]  # (offset, length) -> at most length bytes

XZ_HEADER_MAGIC = b"\xfd7zXZ\x00"
XZ_FOOTER_MAGIC = b"YZ"
_XZ_HEADER = _XZ_FOOTER = 12
_MAX_XZ_INDEX = 64 << 20  # a larger index is not a real file's (one record per block)
ZSTD_FRAME_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)
_FCS_BYTES = (0, 2, 4, 8)  # by Frame_Content_Size_flag (0 means 1 byte for single-segment frames)
_DICT_ID_BYTES = (0, 1, 2, 4)


class _Malformed(Exception):
    """The file is not what its magic says: the size is unknown."""


def _read_exact(read_at: ReadAt, offset: int, length: int) -> bytes:
    data = read_at(offset, length) if offset >= 0 else b""
    if len(data) != length:
        raise _Malformed
    return data


# --- xz -------------------------------------------------------------------------------


def xz_uncompressed_size(read_at: ReadAt, file_size: int) -> int | None:
    """The total uncompressed size of an xz file (every stream), from the
    stream indexes; None when the file is not well-formed xz."""
    try:
        return _xz_total(read_at, file_size)
    except _Malformed:
        return None


def _xz_total(read_at: ReadAt, file_size: int) -> int:
    total = 0
    end = file_size
    streams = 0
    while end > 0:
        end = _skip_stream_padding(read_at, end)
        if end == 0:
            break
        start, size = _xz_stream(read_at, end)
        total += size
        streams += 1
        end = start
    if streams == 0:
        raise _Malformed
    return total


def _skip_stream_padding(read_at: ReadAt, end: int) -> int:
    """The end of the last stream before ``end``: stream padding is null
    bytes in multiples of four."""
    while end >= 4 and _read_exact(read_at, end - 4, 4) == b"\0\0\0\0":
        end -= 4
    return end


def _xz_stream(read_at: ReadAt, end: int) -> tuple[int, int]:
    """(start offset, uncompressed size) of the stream that ends at ``end``."""
    footer = _read_exact(read_at, end - _XZ_FOOTER, _XZ_FOOTER)
    if footer[10:] != XZ_FOOTER_MAGIC or zlib.crc32(footer[4:10]) != _le(footer[0:4]):
        raise _Malformed
    index_size = (_le(footer[4:8]) + 1) * 4
    if index_size > _MAX_XZ_INDEX:
        raise _Malformed
    index_start = end - _XZ_FOOTER - index_size
    index = _read_exact(read_at, index_start, index_size)
    if zlib.crc32(index[:-4]) != _le(index[-4:]):
        raise _Malformed
    blocks_size, uncompressed = _xz_index_totals(index)
    start = index_start - blocks_size - _XZ_HEADER
    header = _read_exact(read_at, start, _XZ_HEADER)
    if header[:6] != XZ_HEADER_MAGIC or header[6:8] != footer[8:10]:
        raise _Malformed  # the stream flags are repeated in header and footer
    return start, uncompressed


def _xz_index_totals(index: bytes) -> tuple[int, int]:
    """(bytes of the blocks, uncompressed bytes) an index lists."""
    if not index or index[0] != 0:
        raise _Malformed
    pos = 1
    count, pos = _multibyte(index, pos)
    blocks = uncompressed = 0
    for _ in range(count):
        unpadded, pos = _multibyte(index, pos)
        size, pos = _multibyte(index, pos)
        if unpadded < 5:  # a block header and check take at least this much
            raise _Malformed
        blocks += -(-unpadded // 4) * 4  # blocks are padded to four bytes
        uncompressed += size
    padding = -pos % 4
    if pos + padding + 4 != len(index) or any(index[pos : pos + padding]):
        raise _Malformed
    return blocks, uncompressed


def _multibyte(data: bytes, pos: int) -> tuple[int, int]:
    """An xz variable-length integer (7 bits a byte, at most 9 bytes)."""
    value = 0
    for i in range(9):
        if pos >= len(data):
            raise _Malformed
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i:
                raise _Malformed  # not the shortest encoding
            return value, pos
    raise _Malformed


def _le(data: bytes) -> int:
    return int.from_bytes(data, "little")


# --- zstd ----------------------------------------------------------------------------


def zstd_content_size(read_at: ReadAt, file_size: int) -> int | None:
    """The total content size of a zstd file (every frame), from the frame
    headers; None when a frame does not record it or the file is malformed."""
    try:
        return _zstd_total(read_at, file_size)
    except _Malformed:
        return None


def _zstd_total(read_at: ReadAt, file_size: int) -> int:
    pos = total = frames = 0
    while pos < file_size:
        magic = _le(_read_exact(read_at, pos, 4))
        if magic in _ZSTD_SKIPPABLE:
            pos += 8 + _le(_read_exact(read_at, pos + 4, 4))
            continue
        if magic != ZSTD_FRAME_MAGIC:
            raise _Malformed
        size, pos = _zstd_frame(read_at, pos + 4)
        total += size
        frames += 1
    if pos != file_size or frames == 0:
        raise _Malformed
    return total


def zstd_first_frame_size(head: bytes) -> int | None:
    """The content size the first frame header of ``head`` records (a stream
    cannot be walked ahead: the other frames are not known yet)."""
    if len(head) < 4 or _le(head[:4]) != ZSTD_FRAME_MAGIC:
        return None
    try:
        return _zstd_header(lambda offset, length: head[offset : offset + length], 4)[0]
    except _Malformed:
        return None


def _zstd_frame(read_at: ReadAt, pos: int) -> tuple[int, int]:
    """(content size, end) of the frame whose header starts at ``pos``."""
    size, pos, has_checksum = _zstd_header(read_at, pos)
    while True:
        header = _le(_read_exact(read_at, pos, 3))
        last, kind, block_size = header & 1, (header >> 1) & 3, header >> 3
        if kind == 3:
            raise _Malformed
        pos += 3 + (1 if kind == 1 else block_size)
        if last:
            break
    return size, pos + (4 if has_checksum else 0)


def _zstd_header(read_at: ReadAt, pos: int) -> tuple[int, int, bool]:
    """(content size, where the first block starts, has a checksum) of the
    frame header at ``pos`` (after the magic number)."""
    descriptor = _read_exact(read_at, pos, 1)[0]
    fcs_flag, single_segment = descriptor >> 6, bool(descriptor & 0x20)
    has_checksum = bool(descriptor & 0x04)
    if descriptor & 0x08:  # the reserved bit
        raise _Malformed
    fcs_bytes = 1 if fcs_flag == 0 and single_segment else _FCS_BYTES[fcs_flag]
    if fcs_bytes == 0:
        raise _Malformed  # no content size: unknown
    pos += 1 + (0 if single_segment else 1) + _DICT_ID_BYTES[descriptor & 0x03]
    size = _le(_read_exact(read_at, pos, fcs_bytes)) + (256 if fcs_bytes == 2 else 0)
    return size, pos + fcs_bytes, has_checksum
