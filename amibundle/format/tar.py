"""The tar stream T inside a bundle: what its writer and reader share.

A bundle's tar stream holds exactly one regular file, the image
(bundle-format.md, section 1). :mod:`amibundle.format.tar_writer` writes it
byte for byte as GNU tar does; :mod:`amibundle.format.tar_reader` reads what
any common tar writes for one file and refuses everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BLOCK_SIZE",
    "MAX_HEADER_DATA",
    "MAX_META_HEADERS",
    "MAX_NUMBER",
    "MAX_SPARSE_ENTRIES",
    "NAME_FIELD",
    "RECORD_SIZE",
    "ZERO_BLOCK",
    "Extent",
    "Member",
    "MemberInfo",
    "padding",
    "stored_size",
]

BLOCK_SIZE = 512
RECORD_SIZE = 10240
NAME_FIELD = 100  # bytes of the name field of a header

# Caps on attacker-chosen lengths: metadata far beyond these is never legitimate.
MAX_HEADER_DATA = 1 << 20  # bytes of one PAX header, LongLink name or sparse 1.0 map
MAX_SPARSE_ENTRIES = 2_000_000
MAX_META_HEADERS = 64  # PAX/LongLink entries in front of one member
MAX_NUMBER = (1 << 63) - 1  # sizes and offsets are off_t in every tar

ZERO_BLOCK = bytes(BLOCK_SIZE)


@dataclass(frozen=True)
class Extent:
    """One data region of a sparse file."""

    offset: int  # byte offset in the file
    length: int  # bytes of data


@dataclass(frozen=True)
class MemberInfo:
    """What the writer needs to know about the one file it archives."""

    name: str
    size: int  # apparent file size
    mode: int  # only & 0o7777 is written
    mtime: int
    extents: tuple[Extent, ...] | None  # None: plain member; else old-GNU sparse data regions


@dataclass(frozen=True)
class Member:
    """The one file found in a tar stream."""

    name: str
    size: int  # apparent size
    mode: int
    mtime: int
    sparse_map: tuple[Extent, ...]  # data regions, zero-length entries dropped


def stored_size(info: MemberInfo) -> int:
    """Bytes of member data that follow the header blocks (before padding)."""
    if info.extents is None:
        return info.size
    return sum(extent.length for extent in info.extents)


def padding(nbytes: int) -> bytes:
    """Zero bytes that bring ``nbytes`` of member data up to a block boundary."""
    return bytes(-nbytes % BLOCK_SIZE)
