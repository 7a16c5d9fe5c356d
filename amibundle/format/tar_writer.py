"""Writing the tar stream T: byte for byte what GNU tar 1.34 writes.

For ``tar -c -S -h --owner 0 --group 0 -b 20`` in its default ``gnu`` format
(bundle-format.md, section 1), so that the image digest of a bundle does not
depend on which tool made it. Only headers are encoded here; the caller
streams the file's data regions after them.
"""

from __future__ import annotations

import itertools

from amibundle.format.tar import (
    BLOCK_SIZE,
    NAME_FIELD,
    RECORD_SIZE,
    Extent,
    MemberInfo,
    padding,
    stored_size,
)

__all__ = ["encode_header", "end_of_archive", "tar_size"]

_OLDGNU_MAGIC = b"ustar  \0"
_OWNER_NAME = b"root"
_SPARSES_IN_HEADER = 4
_SPARSES_IN_EXTENSION = 21
_LONGLINK_NAME = b"././@LongLink"


def _number_field(value: int, width: int) -> bytes:
    """GNU's to_chars(): octal digits and a NUL when the value fits, else
    base-256 (0x80 or 0xff, then the big-endian two's complement)."""
    if 0 <= value < 1 << (3 * (width - 1)):
        return f"{value:0{width - 1}o}".encode("ascii") + b"\0"
    span = 1 << (8 * (width - 1))
    if 0 <= value < span:
        return b"\x80" + value.to_bytes(width - 1, "big")
    if -span <= value < 0:
        return b"\xff" + (value % span).to_bytes(width - 1, "big")
    raise ValueError(f"{value} does not fit in a {width}-byte tar number field")


def _seal(block: bytearray) -> bytes:
    """Fill in the checksum as GNU does: six octal digits, NUL, space."""
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}".encode("ascii") + b"\0 "
    return bytes(block)


def _basic_header(name: bytes, *, mode: int, size: int, mtime: int, typeflag: bytes) -> bytearray:
    block = bytearray(BLOCK_SIZE)
    block[0 : len(name)] = name
    block[100:108] = _number_field(mode, 8)
    block[108:116] = _number_field(0, 8)  # uid: --owner 0
    block[116:124] = _number_field(0, 8)  # gid: --group 0
    block[124:136] = _number_field(size, 12)
    block[136:148] = _number_field(mtime, 12)
    block[156:157] = typeflag
    block[257:265] = _OLDGNU_MAGIC
    block[265 : 265 + len(_OWNER_NAME)] = _OWNER_NAME
    block[297 : 297 + len(_OWNER_NAME)] = _OWNER_NAME
    return block


def _long_link(name: bytes) -> bytes:
    """GNU's write_gnu_long_link(): an 'L' entry whose data is the name and a NUL."""
    size = len(name) + 1
    header = _basic_header(_LONGLINK_NAME, mode=0o644, size=size, mtime=0, typeflag=b"L")
    return _seal(header) + name + b"\0" + padding(size)


def _encode_name(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or b"\0" in raw or b"/" in raw or raw in (b".", b".."):
        raise ValueError(f"{name!r} cannot be the name of the bundled file")
    return raw


def _check_extents(info: MemberInfo) -> None:
    if info.extents is None:
        return
    end = 0
    for extent in info.extents:
        if extent.length <= 0 or extent.offset < end:
            raise ValueError(f"extents must be non-empty, ascending and disjoint: {extent}")
        end = extent.offset + extent.length
    if end > info.size:
        raise ValueError(f"extents reach byte {end}, beyond the file size {info.size}")


def _sparse_fields(entries: list[Extent]) -> bytes:
    return b"".join(
        _number_field(entry.offset, 12) + _number_field(entry.length, 12) for entry in entries
    )


def encode_header(info: MemberInfo) -> bytes:
    """All header blocks for the member: LongLink entry (if needed), main
    header, sparse extension blocks. Raises ValueError for impossible layouts."""
    name = _encode_name(info.name)
    if info.size < 0:
        raise ValueError(f"negative file size {info.size}")
    _check_extents(info)
    blocks = [_long_link(name)] if len(name) > NAME_FIELD else []
    typeflag = b"0" if info.extents is None else b"S"
    header = _basic_header(
        name[:NAME_FIELD],
        mode=info.mode & 0o7777,
        size=stored_size(info),
        mtime=info.mtime,
        typeflag=typeflag,
    )
    if info.extents is None:
        blocks.append(_seal(header))
        return b"".join(blocks)
    # GNU tar's SEEK_DATA scan ends every map with (size, 0), whether or not
    # the file ends in a hole; an all-hole file gets only that entry. Taken
    # in slices from an iterator: a map of millions of entries is never copied.
    entries = itertools.chain(info.extents, [Extent(info.size, 0)])
    left = len(info.extents) + 1
    first = list(itertools.islice(entries, _SPARSES_IN_HEADER))
    left -= len(first)
    header[386 : 386 + 24 * len(first)] = _sparse_fields(first)
    header[482] = 1 if left else 0
    header[483:495] = _number_field(info.size, 12)
    blocks.append(_seal(header))
    while left:
        chunk = list(itertools.islice(entries, _SPARSES_IN_EXTENSION))
        left -= len(chunk)
        extension = bytearray(BLOCK_SIZE)
        extension[0 : 24 * len(chunk)] = _sparse_fields(chunk)
        extension[504] = 1 if left else 0
        blocks.append(bytes(extension))
    return b"".join(blocks)


def end_of_archive(archive_bytes_so_far: int) -> bytes:
    """Two zero blocks, then zeros up to the next multiple of RECORD_SIZE."""
    if archive_bytes_so_far < 0 or archive_bytes_so_far % BLOCK_SIZE:
        raise ValueError(f"an archive cannot end after {archive_bytes_so_far} bytes")
    total = archive_bytes_so_far + 2 * BLOCK_SIZE
    return bytes(2 * BLOCK_SIZE + (-total % RECORD_SIZE))


def tar_size(info: MemberInfo) -> int:
    """The length of the whole archive for ``info``: headers, data, padding
    and the end-of-archive marker (counted, not encoded)."""
    name = _encode_name(info.name)
    header = BLOCK_SIZE
    if len(name) > NAME_FIELD:
        header += BLOCK_SIZE + len(name) + 1 + len(padding(len(name) + 1))
    if info.extents is not None:
        beyond = max(0, len(info.extents) + 1 - _SPARSES_IN_HEADER)
        header += -(-beyond // _SPARSES_IN_EXTENSION) * BLOCK_SIZE
    body = header + stored_size(info) + len(padding(stored_size(info)))
    return body + len(end_of_archive(body))
