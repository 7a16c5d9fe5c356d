"""The tar stream T inside a bundle: exactly one regular file, the image.

The writer half emits, byte for byte, what GNU tar 1.34 writes for
``tar -c -S -h --owner 0 --group 0 -b 20`` in its default ``gnu`` format
(bundle-format.md, section 1), so that the image digest of a bundle does not
depend on which tool made it. It only encodes headers; the caller streams the
file's data regions after them.

The reader half accepts what any common tar writes for one regular file (plain,
old-GNU sparse, PAX with GNU sparse 0.0/0.1/1.0, LongLink, ustar prefix) and
refuses everything else with a one-line :class:`TarFormatError`. Its input is
hostile: every length it is given is checked against a fixed cap before
anything of that length is allocated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from amibundle.errors import TarFormatError

__all__ = [
    "BLOCK_SIZE",
    "RECORD_SIZE",
    "Extent",
    "MemberInfo",
    "encode_header",
    "stored_size",
    "padding",
    "end_of_archive",
    "Member",
    "SingleMemberReader",
]

BLOCK_SIZE = 512
RECORD_SIZE = 10240

# Caps on attacker-chosen lengths: metadata far beyond these is never legitimate.
MAX_HEADER_DATA = 1 << 20  # bytes of one PAX header, LongLink name or sparse 1.0 map
MAX_SPARSE_ENTRIES = 2_000_000
MAX_META_HEADERS = 64  # PAX/LongLink entries in front of one member
MAX_NUMBER = (1 << 63) - 1  # sizes and offsets are off_t in every tar

_ZERO_BLOCK = bytes(BLOCK_SIZE)
_NAME_FIELD = 100
_OLDGNU_MAGIC = b"ustar  \0"
_POSIX_MAGIC = b"ustar\x0000"
_OWNER_NAME = b"root"
_SPARSES_IN_HEADER = 4
_SPARSES_IN_EXTENSION = 21
_LONGLINK_NAME = b"././@LongLink"


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


# --------------------------------------------------------------------------- writer


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


def stored_size(info: MemberInfo) -> int:
    """Bytes of member data that follow the header blocks (before padding)."""
    if info.extents is None:
        return info.size
    return sum(extent.length for extent in info.extents)


def encode_header(info: MemberInfo) -> bytes:
    """All header blocks for the member: LongLink entry (if needed), main
    header, sparse extension blocks. Raises ValueError for impossible layouts."""
    name = _encode_name(info.name)
    if info.size < 0:
        raise ValueError(f"negative file size {info.size}")
    _check_extents(info)
    blocks = [_long_link(name)] if len(name) > _NAME_FIELD else []
    typeflag = b"0" if info.extents is None else b"S"
    header = _basic_header(
        name[:_NAME_FIELD],
        mode=info.mode & 0o7777,
        size=stored_size(info),
        mtime=info.mtime,
        typeflag=typeflag,
    )
    if info.extents is None:
        blocks.append(_seal(header))
        return b"".join(blocks)
    # GNU tar's SEEK_DATA scan ends every map with (size, 0), whether or not
    # the file ends in a hole; an all-hole file gets only that entry.
    entries = [*info.extents, Extent(info.size, 0)]
    first, rest = entries[:_SPARSES_IN_HEADER], entries[_SPARSES_IN_HEADER:]
    header[386 : 386 + 24 * len(first)] = _sparse_fields(first)
    header[482] = 1 if rest else 0
    header[483:495] = _number_field(info.size, 12)
    blocks.append(_seal(header))
    while rest:
        chunk, rest = rest[:_SPARSES_IN_EXTENSION], rest[_SPARSES_IN_EXTENSION:]
        extension = bytearray(BLOCK_SIZE)
        extension[0 : 24 * len(chunk)] = _sparse_fields(chunk)
        extension[504] = 1 if rest else 0
        blocks.append(bytes(extension))
    return b"".join(blocks)


def padding(nbytes: int) -> bytes:
    """Zero bytes that bring ``nbytes`` of member data up to a block boundary."""
    return bytes(-nbytes % BLOCK_SIZE)


def end_of_archive(archive_bytes_so_far: int) -> bytes:
    """Two zero blocks, then zeros up to the next multiple of RECORD_SIZE."""
    if archive_bytes_so_far < 0 or archive_bytes_so_far % BLOCK_SIZE:
        raise ValueError(f"an archive cannot end after {archive_bytes_so_far} bytes")
    total = archive_bytes_so_far + 2 * BLOCK_SIZE
    return bytes(2 * BLOCK_SIZE + (-total % RECORD_SIZE))


# --------------------------------------------------------------------------- reader

_TYPE_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"D": "a directory",  # GNU dumpdir
}
_REGULAR_TYPES = (b"0", b"\0", b"7")
_DECIMAL = re.compile(rb"[0-9]{1,19}")
_PAX_LENGTH = re.compile(rb"([0-9]{1,7}) ")
_PAX_MTIME = re.compile(r"(-?[0-9]{1,19})(?:\.[0-9]{0,19})?")


def _show_type(typeflag: bytes) -> str:
    return typeflag.decode("ascii") if typeflag.isalnum() else f"\\x{typeflag[0]:02x}"


def _parse_number(field: bytes, what: str) -> int:
    """Read an octal or GNU base-256 header number, as GNU's from_header() does."""
    if field[0] in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(0x30 <= char <= 0x37 for char in text):
        raise TarFormatError(f"tar header has a malformed {what} field {field!r}")
    return int(text, 8)


def _parse_size(field: bytes, what: str) -> int:
    value = _parse_number(field, what)
    if not 0 <= value <= MAX_NUMBER:
        raise TarFormatError(f"tar header has an impossible {what} {value}")
    return value


def _checksum_ok(block: bytes) -> bool:
    """Unsigned (POSIX) or signed (old Sun tars) byte sum, chksum field as spaces."""
    try:
        stored = _parse_number(block[148:156], "checksum")
    except TarFormatError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    signed = unsigned - 256 * sum(1 for char in block if char >= 0x80)
    signed += 256 * sum(1 for char in block[148:156] if char >= 0x80)
    return stored in (unsigned, signed)


def _parse_decimal(text: str | bytes, what: str) -> int:
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if not _DECIMAL.fullmatch(raw) or int(raw) > MAX_NUMBER:
        raise TarFormatError(f"tar stream has a malformed {what}: {raw[:40]!r}")
    return int(raw)


def _parse_pax(data: bytes) -> list[tuple[str, str]]:
    """Split PAX records ``"<len> <key>=<value>\\n"``, keeping order and repeats."""
    records: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data) and data[pos] != 0:
        match = _PAX_LENGTH.match(data, pos)
        length = int(match.group(1)) if match else 0
        record = data[pos : pos + length]
        if not match or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError(f"malformed PAX extended header record at byte {pos}")
        key, _, value = record[match.end() - pos : -1].partition(b"=")
        records.append(
            (key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )
        pos += length
    if any(data[pos:]):
        raise TarFormatError("malformed PAX extended header: data after its records")
    return records


def _show_name(name: str) -> str:
    """A quoted name for a one-line message; hostile names can be 1 MiB long."""
    return repr(name if len(name) <= 200 else name[:200] + "...")


def _check_name(name: str) -> None:
    if not name:
        raise TarFormatError("the file in the tar stream has an empty name")
    if "\0" in name:
        raise TarFormatError(f"tar member name {_show_name(name)} contains a NUL byte")
    if "/" in name:
        raise TarFormatError(
            f"tar member name {_show_name(name)} contains '/';"
            " a bundle must hold one file, not a path"
        )
    if name in (".", ".."):
        raise TarFormatError(f"tar member name {_show_name(name)} is not a file name")


def _build_map(
    entries: list[tuple[int, int]], real_size: int, data_size: int
) -> tuple[Extent, ...]:
    """Check a sparse map against the sizes and drop zero-length entries."""
    end = 0
    extents: list[Extent] = []
    for offset, length in entries:
        if offset < end:
            raise TarFormatError("the sparse map of the tar member is not ascending or overlaps")
        end = offset + length
        if end > real_size:
            raise TarFormatError(
                f"the sparse map reaches byte {end}, beyond the file size {real_size}"
            )
        if length:
            extents.append(Extent(offset, length))
    stored = sum(extent.length for extent in extents)
    if stored != data_size:
        raise TarFormatError(
            f"the sparse map holds {stored} bytes of data but the member stores {data_size}"
        )
    return tuple(extents)


@dataclass
class _Meta:
    """What PAX and LongLink entries say about the member that follows them."""

    pax: list[tuple[str, str]]
    long_name: bytes | None = None
    pax_bytes: int = 0

    def last(self, key: str) -> str | None:
        for record_key, value in reversed(self.pax):
            if record_key == key:
                return value
        return None


class SingleMemberReader:
    """Reads a tar stream that must hold exactly one regular (plain or sparse) file."""

    def __init__(self, stream: BinaryIO, *, chunk_size: int = 1 << 20) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._stream = stream
        self._chunk_size = chunk_size
        self._bytes_read = 0
        self._member: Member | None = None
        self._data_started = False
        self._remaining = 0  # member data and padding not consumed yet

    @property
    def bytes_read(self) -> int:
        """Tar bytes consumed so far."""
        return self._bytes_read

    # ---- low-level reading

    def _read(self, nbytes: int) -> bytes:
        """Up to ``nbytes``; fewer only at end of stream (short reads are retried)."""
        data = self._stream.read(nbytes)
        if len(data) < nbytes and data:
            parts = [data]
            got = len(data)
            while got < nbytes:
                more = self._stream.read(nbytes - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self._bytes_read += len(data)
        return data

    def _read_exact(self, nbytes: int, where: str) -> bytes:
        data = self._read(nbytes)
        if len(data) != nbytes:
            raise TarFormatError(f"the tar stream ends early, in {where}")
        return data

    def _skip(self, nbytes: int, where: str) -> None:
        while nbytes:
            nbytes -= len(self._read_exact(min(nbytes, self._chunk_size), where))

    def _read_header_block(self, where: str) -> bytes:
        offset = self._bytes_read
        block = self._read(BLOCK_SIZE)
        if not block and offset == 0:
            raise TarFormatError("the tar stream is empty")
        if len(block) != BLOCK_SIZE:
            raise TarFormatError(f"the tar stream ends early, in {where}")
        if block == _ZERO_BLOCK:
            raise TarFormatError("the tar stream holds no file (it ends before the first member)")
        if not _checksum_ok(block):
            raise TarFormatError(f"bad tar header checksum at byte {offset}: not a tar stream")
        return block

    def _read_meta_data(self, block: bytes, what: str) -> bytes:
        size = _parse_size(block[124:136], f"{what} size")
        if size > MAX_HEADER_DATA:
            raise TarFormatError(f"{what} of {size} bytes is too large (the limit is 1 MiB)")
        data = self._read_exact(size, f"a {what}")
        self._skip(-size % BLOCK_SIZE, f"a {what}")
        return data

    # ---- header

    def read_header(self) -> Member:
        """Read every header of the member and return what it describes."""
        if self._member is not None:
            raise RuntimeError("read_header() was already called")
        meta = _Meta(pax=[])
        for _ in range(MAX_META_HEADERS):
            block = self._read_header_block("a tar header")
            typeflag = block[156:157]
            if typeflag == b"x":
                data = self._read_meta_data(block, "PAX header")
                meta.pax_bytes += len(data)
                if meta.pax_bytes > MAX_HEADER_DATA:
                    raise TarFormatError("PAX headers of the member exceed 1 MiB")
                meta.pax.extend(_parse_pax(data))
            elif typeflag == b"g":
                self._read_meta_data(block, "PAX global header")  # holds no file attributes
            elif typeflag in (b"L", b"K"):
                data = self._read_meta_data(block, "GNU long name")
                if typeflag == b"L":  # 'K' names a link target; the link itself is refused
                    meta.long_name = data.split(b"\0", 1)[0]
            else:
                member = self._start_member(block, meta)
                self._member = member
                return member
        raise TarFormatError(f"more than {MAX_META_HEADERS} extended headers before the file")

    def _member_name(self, block: bytes, meta: _Meta) -> str:
        raw = block[:_NAME_FIELD].split(b"\0", 1)[0]
        prefix = block[345:500].split(b"\0", 1)[0]
        if block[257:265] == _POSIX_MAGIC and prefix:
            raw = prefix + b"/" + raw
        if meta.long_name is not None:
            raw = meta.long_name
        name = raw.decode("utf-8", "surrogateescape")
        for key in ("path", "GNU.sparse.name"):
            name = meta.last(key) or name
        return name

    def _start_member(self, block: bytes, meta: _Meta) -> Member:
        name = self._member_name(block, meta)
        typeflag = block[156:157]
        if typeflag in _TYPE_NAMES:
            raise TarFormatError(
                f"{_show_name(name)} is {_TYPE_NAMES[typeflag]};"
                " a bundle must hold one regular file"
            )
        if typeflag not in (*_REGULAR_TYPES, b"S"):
            raise TarFormatError(
                f"unsupported tar entry type '{_show_type(typeflag)}' for {_show_name(name)}"
            )
        _check_name(name)
        mode = _parse_number(block[100:108], "mode") & 0o7777
        mtime = _parse_number(block[136:148], "mtime")
        pax_mtime = meta.last("mtime")
        if pax_mtime is not None:
            match = _PAX_MTIME.fullmatch(pax_mtime)
            if not match:
                raise TarFormatError(f"malformed PAX mtime {pax_mtime[:40]!r}")
            mtime = int(match.group(1))
        pax_size = meta.last("size")
        size = (
            _parse_size(block[124:136], "size")
            if pax_size is None
            else _parse_decimal(pax_size, "PAX size")
        )
        self._remaining = size + -size % BLOCK_SIZE
        entries: list[tuple[int, int]] | None
        if typeflag == b"S":
            real_size = _parse_size(block[483:495], "real size")
            entries = self._read_old_gnu_map(block)
        else:
            real_size, entries, map_bytes = self._read_pax_sparse(meta, size)
            size -= map_bytes
        if entries is None:
            sparse_map = (Extent(0, size),) if size else ()
            return Member(name, size, mode, mtime, sparse_map)
        return Member(name, real_size, mode, mtime, _build_map(entries, real_size, size))

    def _read_old_gnu_map(self, block: bytes) -> list[tuple[int, int]]:
        """Map slots of the main header, then extension blocks while isextended."""
        entries: list[tuple[int, int]] = []
        finished = self._add_old_gnu_slots(block[386:482], entries)
        extended = block[482]
        while extended:
            if finished:
                raise TarFormatError("the old-GNU sparse map has an empty slot before its end")
            if len(entries) > MAX_SPARSE_ENTRIES:
                raise TarFormatError("the sparse map has too many entries")
            extension = self._read_exact(BLOCK_SIZE, "a sparse map")
            finished = self._add_old_gnu_slots(extension[:504], entries)
            extended = extension[504]
        return entries

    @staticmethod
    def _add_old_gnu_slots(slots: bytes, entries: list[tuple[int, int]]) -> bool:
        """Append the 24-byte slots; True when an empty slot ended the map."""
        for start in range(0, len(slots), 24):
            # GNU's oldgnu_add_sparse(): a slot whose numbytes starts with NUL ends the map.
            if slots[start + 12] == 0:
                return True
            offset = _parse_size(slots[start : start + 12], "sparse offset")
            length = _parse_size(slots[start + 12 : start + 24], "sparse length")
            entries.append((offset, length))
        return False

    def _read_pax_sparse(
        self, meta: _Meta, size: int
    ) -> tuple[int, list[tuple[int, int]] | None, int]:
        """(real size, map or None for a plain file, map bytes at the start of the data)."""
        major, minor = meta.last("GNU.sparse.major"), meta.last("GNU.sparse.minor")
        if major is not None or minor is not None:
            if (major, minor) != ("1", "0"):
                raise TarFormatError(f"unsupported GNU sparse format {major}.{minor}")
            real = meta.last("GNU.sparse.realsize") or meta.last("GNU.sparse.size")
            if real is None:
                raise TarFormatError("GNU sparse 1.0 member without GNU.sparse.realsize")
            entries, map_bytes = self._read_sparse1_map(size)
            return _parse_decimal(real, "sparse real size"), entries, map_bytes
        text_map = meta.last("GNU.sparse.map")
        if text_map is not None:
            numbers = [_parse_decimal(item, "GNU.sparse.map") for item in text_map.split(",")]
            if len(numbers) % 2:
                raise TarFormatError("GNU.sparse.map has an odd number of values")
            entries = list(zip(numbers[::2], numbers[1::2], strict=True))
        elif any(key == "GNU.sparse.offset" for key, _ in meta.pax):
            entries = _sparse0_entries(meta.pax)
        else:
            return size, None, 0
        real = meta.last("GNU.sparse.size")
        if real is None:
            raise TarFormatError("GNU sparse 0.x member without GNU.sparse.size")
        count = meta.last("GNU.sparse.numblocks")
        if count is not None and _parse_decimal(count, "GNU.sparse.numblocks") != len(entries):
            raise TarFormatError("GNU.sparse.numblocks does not match the sparse map")
        return _parse_decimal(real, "sparse real size"), entries, 0

    def _read_sparse1_map(self, size: int) -> tuple[list[tuple[int, int]], int]:
        """The 1.0 map: decimal lines (count, then offset/length pairs) at the
        start of the member data, padded to a block."""
        consumed = 0
        buffer = b""
        pos = 0

        def next_number(what: str) -> int:
            nonlocal consumed, buffer, pos
            newline = buffer.find(b"\n", pos)
            while newline < 0:
                if len(buffer) - pos > 20:
                    raise TarFormatError(f"malformed GNU sparse 1.0 map: bad {what}")
                if consumed + BLOCK_SIZE > size:
                    raise TarFormatError("the GNU sparse 1.0 map runs past the member data")
                # Keep only the unparsed tail, so the buffer stays under two blocks.
                buffer = buffer[pos:] + self._read_exact(BLOCK_SIZE, "a sparse map")
                pos = 0
                consumed += BLOCK_SIZE
                newline = buffer.find(b"\n")
            line, pos = buffer[pos:newline], newline + 1
            return _parse_decimal(line, f"GNU sparse 1.0 {what}")

        count = next_number("entry count")
        if count > MAX_SPARSE_ENTRIES:
            raise TarFormatError(f"the sparse map has too many entries ({count})")
        entries = [(next_number("offset"), next_number("length")) for _ in range(count)]
        self._remaining -= consumed
        return entries, consumed

    # ---- data and end

    def iter_data(self) -> Iterator[tuple[int, memoryview]]:
        """(offset in file, data) chunks, ascending, covering exactly the sparse map."""
        if self._member is None:
            raise RuntimeError("read_header() must come before iter_data()")
        if self._data_started:
            raise RuntimeError("iter_data() was already called")
        self._data_started = True
        return self._generate_data(self._member)

    def _generate_data(self, member: Member) -> Iterator[tuple[int, memoryview]]:
        for extent in member.sparse_map:
            position, end = extent.offset, extent.offset + extent.length
            while position < end:
                data = self._read_exact(min(end - position, self._chunk_size), "the file data")
                self._remaining -= len(data)
                yield position, memoryview(data)
                position += len(data)

    def finish(self) -> None:
        """Consume the rest: member data not read yet, the end-of-archive
        marker, then only zero bytes up to EOF."""
        if self._member is None:
            raise RuntimeError("read_header() must come before finish()")
        self._skip(self._remaining, "the file data")
        self._remaining = 0
        for _ in range(2):
            block = self._read(BLOCK_SIZE)
            if len(block) != BLOCK_SIZE:
                raise TarFormatError("the tar stream ends early, before its end-of-archive marker")
            if block != _ZERO_BLOCK:
                if _checksum_ok(block):
                    raise TarFormatError(
                        "the tar stream holds a second member; a bundle must hold one file"
                    )
                raise TarFormatError("the tar stream has unexpected data after the file")
        while True:
            chunk = self._read(self._chunk_size)
            if not chunk:
                return
            if chunk.count(0) != len(chunk):
                raise TarFormatError("the tar stream has non-zero data after its end marker")


def _sparse0_entries(records: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """GNU sparse 0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes keys, in order."""
    entries: list[tuple[int, int]] = []
    offset: int | None = None
    for key, value in records:
        if key == "GNU.sparse.offset":
            if offset is not None:
                raise TarFormatError("GNU.sparse.offset without its GNU.sparse.numbytes")
            offset = _parse_decimal(value, "GNU.sparse.offset")
        elif key == "GNU.sparse.numbytes":
            if offset is None:
                raise TarFormatError("GNU.sparse.numbytes without a GNU.sparse.offset")
            entries.append((offset, _parse_decimal(value, "GNU.sparse.numbytes")))
            offset = None
    if offset is not None:
        raise TarFormatError("GNU.sparse.offset without its GNU.sparse.numbytes")
    return entries
