"""The tar stream T inside a bundle: what its writer and reader share.

A bundle's tar stream holds exactly one regular file, the image
(bundle-format.md, section 1). :mod:`amibundle.format.tar_writer` writes it
byte for byte as GNU tar does; :mod:`amibundle.format.tar_reader` reads what
any common tar writes for one file and refuses everything else.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

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
    "ExtentMap",
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


class ExtentMap(Sequence[Extent]):
    """The data regions of a sparse member, stored compactly: two arrays of
    64-bit integers (16 bytes an extent) instead of an object each, so a map
    of millions of extents stays a few dozen MiB. Reads as a sequence of
    :class:`Extent` and compares equal to any sequence of the same extents."""

    __slots__ = ("_lengths", "_offsets", "stored")

    def __init__(self, extents: Iterable[Extent | tuple[int, int]] = ()) -> None:
        self._offsets = array("q")
        self._lengths = array("q")
        self.stored = 0  # sum of the lengths: the member's data bytes
        for offset, length in (
            (e.offset, e.length) if isinstance(e, Extent) else e for e in extents
        ):
            self.append(offset, length)

    def append(self, offset: int, length: int) -> None:
        self._offsets.append(offset)
        self._lengths.append(length)
        self.stored += length

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> Extent: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Extent, ...]: ...
    def __getitem__(self, index: int | slice) -> Extent | tuple[Extent, ...]:
        if isinstance(index, slice):
            return tuple(
                Extent(o, n)
                for o, n in zip(self._offsets[index], self._lengths[index], strict=True)
            )
        return Extent(self._offsets[index], self._lengths[index])

    def __iter__(self) -> Iterator[Extent]:
        return (Extent(o, n) for o, n in zip(self._offsets, self._lengths, strict=True))

    def pairs(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of each extent, without making Extent objects."""
        return zip(self._offsets, self._lengths, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExtentMap):
            return self._offsets == other._offsets and self._lengths == other._lengths
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._offsets.tobytes(), self._lengths.tobytes()))

    def __repr__(self) -> str:
        shown = ", ".join(repr(e) for e in self[:3])
        more = f", ... ({len(self)} extents)" if len(self) > 3 else ""
        return f"ExtentMap([{shown}{more}])"


@dataclass(frozen=True)
class MemberInfo:
    """What the writer needs to know about the one file it archives."""

    name: str
    size: int  # apparent file size
    mode: int  # only & 0o7777 is written
    mtime: int
    extents: Sequence[Extent] | None  # None: plain member; else old-GNU sparse data regions


@dataclass(frozen=True)
class Member:
    """The one file found in a tar stream."""

    name: str
    size: int  # apparent size
    mode: int
    mtime: int
    sparse_map: Sequence[Extent]  # data regions, zero-length entries dropped (an ExtentMap)

    @property
    def data_size(self) -> int:
        """Bytes in the data regions: what was written, holes left out."""
        return _data_bytes(self.sparse_map)


def stored_size(info: MemberInfo) -> int:
    """Bytes of member data that follow the header blocks (before padding)."""
    return info.size if info.extents is None else _data_bytes(info.extents)


def _data_bytes(extents: Sequence[Extent]) -> int:
    """The sum of the extents' lengths (an ExtentMap keeps it)."""
    if isinstance(extents, ExtentMap):
        return extents.stored
    return sum(extent.length for extent in extents)


def padding(nbytes: int) -> bytes:
    """Zero bytes that bring ``nbytes`` of member data up to a block boundary."""
    return bytes(-nbytes % BLOCK_SIZE)
