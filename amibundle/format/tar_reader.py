"""Reading the tar stream T of a bundle: one regular file, nothing else.

Accepts what any common tar writes for one regular file (plain, old-GNU
sparse, PAX with GNU sparse 0.0/0.1/1.0, LongLink, ustar prefix) and refuses
everything else with a one-line :class:`TarFormatError`. Its input is
hostile: every length it is given is checked against a fixed cap before
anything of that length is allocated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from amibundle.errors import TarFormatError, shorten
from amibundle.format.tar import (
    BLOCK_SIZE,
    MAX_HEADER_DATA,
    MAX_META_HEADERS,
    MAX_NUMBER,
    MAX_SPARSE_ENTRIES,
    NAME_FIELD,
    ZERO_BLOCK,
    Extent,
    ExtentMap,
    Member,
)

__all__ = ["SingleMemberReader"]

_POSIX_MAGIC = b"ustar\x0000"
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
    return shorten(repr(name))


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


def _build_map(entries: ExtentMap, real_size: int, data_size: int) -> ExtentMap:
    """Check a sparse map against the sizes and drop zero-length entries."""
    end = 0
    extents = ExtentMap()
    for offset, length in entries.pairs():
        if offset < end:
            raise TarFormatError("the sparse map of the tar member is not ascending or overlaps")
        end = offset + length
        if end > real_size:
            raise TarFormatError(
                f"the sparse map reaches byte {end}, beyond the file size {real_size}"
            )
        if length:
            extents.append(offset, length)
    if extents.stored != data_size:
        raise TarFormatError(
            f"the sparse map holds {extents.stored} bytes of data but the member stores {data_size}"
        )
    return extents


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
        if block == ZERO_BLOCK:
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
        raw = block[:NAME_FIELD].split(b"\0", 1)[0]
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
        entries: ExtentMap | None
        if typeflag == b"S":
            real_size = _parse_size(block[483:495], "real size")
            entries = self._read_old_gnu_map(block)
        else:
            real_size, entries, map_bytes = self._read_pax_sparse(meta, size)
            size -= map_bytes
        if entries is None:
            return Member(name, size, mode, mtime, ExtentMap([Extent(0, size)] if size else []))
        return Member(name, real_size, mode, mtime, _build_map(entries, real_size, size))

    def _read_old_gnu_map(self, block: bytes) -> ExtentMap:
        """Map slots of the main header, then extension blocks while isextended."""
        entries = ExtentMap()
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
    def _add_old_gnu_slots(slots: bytes, entries: ExtentMap) -> bool:
        """Append the 24-byte slots; True when an empty slot ended the map."""
        for start in range(0, len(slots), 24):
            # GNU's oldgnu_add_sparse(): a slot whose numbytes starts with NUL ends the map.
            if slots[start + 12] == 0:
                return True
            offset = _parse_size(slots[start : start + 12], "sparse offset")
            length = _parse_size(slots[start + 12 : start + 24], "sparse length")
            entries.append(offset, length)
        return False

    def _read_pax_sparse(self, meta: _Meta, size: int) -> tuple[int, ExtentMap | None, int]:
        """(real size, map or None for a plain file, map bytes at the start of the data)."""
        major, minor = meta.last("GNU.sparse.major"), meta.last("GNU.sparse.minor")
        if major is not None or minor is not None:
            if (major, minor) != ("1", "0"):
                version = shorten(f"{major}.{minor}")
                raise TarFormatError(f"unsupported GNU sparse format {version}")
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
            entries = ExtentMap(zip(numbers[::2], numbers[1::2], strict=True))
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

    def _read_sparse1_map(self, size: int) -> tuple[ExtentMap, int]:
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
        entries = ExtentMap()
        for _ in range(count):
            entries.append(next_number("offset"), next_number("length"))
        self._remaining -= consumed
        return entries, consumed

    # ---- data and end

    def iter_data(self) -> Iterator[tuple[int, memoryview]]:
        """(offset in file, data) chunks, ascending, covering exactly the sparse map."""
        batches = self.iter_batches()  # checks the call order now, not when iterated
        return (piece for batch in batches for piece in batch)

    def iter_batches(self, most: int = 4096) -> Iterator[list[tuple[int, memoryview]]]:
        """The same pieces as :meth:`iter_data`, in lists of up to ``most``
        pieces from one read of the stream: a member with millions of tiny
        extents costs a few thousand reads, not millions. Each piece's data
        stays valid after the next list is taken."""
        if self._member is None:
            raise RuntimeError("read_header() must come before iter_data()")
        if self._data_started:
            raise RuntimeError("iter_data() was already called")
        self._data_started = True
        return self._generate_batches(self._member, most)

    def _generate_batches(
        self, member: Member, most: int
    ) -> Iterator[list[tuple[int, memoryview]]]:
        left = sum(extent.length for extent in member.sparse_map)  # stored bytes not read
        chunk = memoryview(b"")
        used = 0
        batch: list[tuple[int, memoryview]] = []
        for extent in member.sparse_map:
            position, length = extent.offset, extent.length
            while length:
                if used == len(chunk) or len(batch) == most:
                    if batch:
                        yield batch
                        batch = []
                    if used == len(chunk):
                        size = min(left, self._chunk_size)
                        chunk, used = memoryview(self._read_exact(size, "the file data")), 0
                        left -= size
                        self._remaining -= size
                take = min(length, len(chunk) - used)
                batch.append((position, chunk[used : used + take]))
                used += take
                position += take
                length -= take
        if batch:
            yield batch

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
            if block != ZERO_BLOCK:
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


def _sparse0_entries(records: list[tuple[str, str]]) -> ExtentMap:
    """GNU sparse 0.0: repeated GNU.sparse.offset / GNU.sparse.numbytes keys, in order."""
    entries = ExtentMap()
    offset: int | None = None
    for key, value in records:
        if key == "GNU.sparse.offset":
            if offset is not None:
                raise TarFormatError("GNU.sparse.offset without its GNU.sparse.numbytes")
            offset = _parse_decimal(value, "GNU.sparse.offset")
        elif key == "GNU.sparse.numbytes":
            if offset is None:
                raise TarFormatError("GNU.sparse.numbytes without a GNU.sparse.offset")
            entries.append(offset, _parse_decimal(value, "GNU.sparse.numbytes"))
            offset = None
    if offset is not None:
        raise TarFormatError("GNU.sparse.offset without its GNU.sparse.numbytes")
    return entries
