"""Builders of arbitrary tar streams, hostile ones included, for tests.

Written from the tar format descriptions (POSIX ustar/pax, GNU tar's manual),
independently of ``amibundle.tarstream``, so that tests which read these
streams cross-check the reader instead of echoing its writer. Every function
returns bytes; tests glue them together (and later wrap them into bundles).
Nothing here validates: a builder writes whatever it is told to.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

__all__ = [
    "BLOCK",
    "RECORD",
    "GNU_MAGIC",
    "POSIX_MAGIC",
    "octal",
    "base256",
    "number",
    "header",
    "pad",
    "member",
    "long_name",
    "pax_record",
    "pax_header",
    "old_gnu_sparse",
    "sparse1_map",
    "pax_sparse_member",
    "end",
    "archive",
    "pattern",
    "image_of",
]

BLOCK = 512
RECORD = 10240
GNU_MAGIC = b"ustar  \0"
POSIX_MAGIC = b"ustar\x0000"

Checksum = Literal["unsigned", "signed", "bad", "blank"]


def _b(text: str | bytes) -> bytes:
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text


def octal(value: int, width: int) -> bytes:
    """``width - 1`` octal digits and a NUL (raises if the value does not fit)."""
    digits = f"{value:0{width - 1}o}".encode()
    if value < 0 or len(digits) > width - 1:
        raise ValueError(f"{value} does not fit in {width} octal bytes")
    return digits + b"\0"


def base256(value: int, width: int) -> bytes:
    """GNU base-256: 0x80 (or 0xff when negative) then big-endian two's complement."""
    body = value % (1 << (8 * (width - 1)))
    return (b"\xff" if value < 0 else b"\x80") + body.to_bytes(width - 1, "big")


def number(value: int, width: int) -> bytes:
    """Octal when it fits, else base-256, as GNU tar chooses."""
    return octal(value, width) if 0 <= value < 8 ** (width - 1) else base256(value, width)


def _field(value: int | bytes, width: int) -> bytes:
    return value if isinstance(value, bytes) else number(value, width)


def header(
    name: str | bytes,
    *,
    typeflag: bytes = b"0",
    size: int | bytes = 0,
    mode: int | bytes = 0o644,
    mtime: int | bytes = 0,
    uid: int | bytes = 0,
    gid: int | bytes = 0,
    linkname: str | bytes = b"",
    magic: bytes = GNU_MAGIC,
    uname: bytes = b"root",
    gname: bytes = b"root",
    prefix: str | bytes = b"",
    fields: Mapping[int, bytes] | None = None,
    checksum: Checksum = "unsigned",
) -> bytes:
    """One 512-byte header block. Numbers given as bytes are written verbatim;
    ``fields`` maps byte offsets to raw bytes written last (before the checksum)."""
    block = bytearray(BLOCK)

    def put(offset: int, data: bytes) -> None:
        block[offset : offset + len(data)] = data

    put(0, _b(name)[:100])
    put(100, _field(mode, 8))
    put(108, _field(uid, 8))
    put(116, _field(gid, 8))
    put(124, _field(size, 12))
    put(136, _field(mtime, 12))
    put(156, typeflag)
    put(157, _b(linkname)[:100])
    put(257, magic)
    put(265, uname)
    put(297, gname)
    put(345, _b(prefix)[:155])
    for offset, data in (fields or {}).items():
        put(offset, data)
    block[148:156] = b" " * 8
    total = sum(block)
    if checksum == "signed":
        total -= 256 * sum(1 for char in block if char >= 0x80)
    elif checksum == "bad":
        total += 1
    if checksum != "blank":
        put(148, f"{total & 0o777777:06o}".encode() + b"\0 ")
    return bytes(block)


def pad(data: bytes) -> bytes:
    """``data`` followed by zeros up to a block boundary."""
    return data + bytes(-len(data) % BLOCK)


def member(name: str | bytes, data: bytes = b"", **header_args: object) -> bytes:
    """A header (size = len(data) unless given) and the padded data."""
    header_args.setdefault("size", len(data))
    return header(name, **header_args) + pad(data)  # type: ignore[arg-type]


def long_name(
    name: str | bytes, *, typeflag: bytes = b"L", size: int | bytes | None = None
) -> bytes:
    """A GNU ``././@LongLink`` entry carrying ``name`` (NUL-terminated)."""
    data = _b(name) + b"\0"
    declared = len(data) if size is None else size
    return header("././@LongLink", typeflag=typeflag, size=declared) + pad(data)


def pax_record(key: str | bytes, value: str | bytes) -> bytes:
    """``"<len> key=value\\n"`` where <len> counts the whole record, itself included."""
    body = b" " + _b(key) + b"=" + _b(value) + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax_header(
    records: Iterable[tuple[str | bytes, str | bytes]] = (),
    *,
    typeflag: bytes = b"x",
    raw: bytes | None = None,
    size: int | bytes | None = None,
) -> bytes:
    """A PAX extended ('x') or global ('g') header entry."""
    data = raw if raw is not None else b"".join(pax_record(k, v) for k, v in records)
    declared = len(data) if size is None else size
    return header("./PaxHeaders/file", typeflag=typeflag, size=declared, magic=POSIX_MAGIC) + pad(
        data
    )


def _slots(entries: Sequence[tuple[int | bytes, int | bytes]]) -> bytes:
    return b"".join(_field(offset, 12) + _field(length, 12) for offset, length in entries)


def old_gnu_sparse(
    name: str | bytes,
    real_size: int | bytes,
    entries: Sequence[tuple[int | bytes, int | bytes]],
    data: bytes,
    *,
    stored_size: int | bytes | None = None,
    mtime: int = 0,
    mode: int = 0o644,
    isextended: bool | None = None,
    checksum: Checksum = "unsigned",
) -> bytes:
    """An old-GNU 'S' member: map entries exactly as given (4 in the header,
    21 per extension block), then ``data`` (the stored regions) padded."""
    main, rest = list(entries[:4]), list(entries[4:])
    extended = bool(rest) if isextended is None else isextended
    block = header(
        name,
        typeflag=b"S",
        size=len(data) if stored_size is None else stored_size,
        mtime=mtime,
        mode=mode,
        fields={386: _slots(main), 482: bytes([extended]), 483: _field(real_size, 12)},
        checksum=checksum,
    )
    extensions = []
    while rest:
        chunk, rest = rest[:21], rest[21:]
        extensions.append(_slots(chunk).ljust(504, b"\0") + bytes([bool(rest)]).ljust(8, b"\0"))
    return block + b"".join(extensions) + pad(data)


def sparse1_map(entries: Sequence[tuple[int, int]], *, count: int | None = None) -> bytes:
    """GNU sparse 1.0 map text (count, then offset and length lines), padded."""
    numbers = [len(entries) if count is None else count]
    for offset, length in entries:
        numbers += [offset, length]
    return pad(b"".join(b"%d\n" % n for n in numbers))


def pax_sparse_member(
    name: str,
    real_size: int,
    entries: Sequence[tuple[int, int]],
    data: bytes,
    *,
    version: Literal["0.0", "0.1", "1.0"],
    mtime: int = 0,
) -> bytes:
    """A PAX header plus member in one of GNU's PAX sparse formats, laid out
    as GNU tar writes them (fake ``GNUSparseFile.0/`` member name for 0.1/1.0)."""
    fake_name = f"./GNUSparseFile.0/{name}"
    records: list[tuple[str, str]]
    if version == "0.0":
        records = [("GNU.sparse.size", str(real_size)), ("GNU.sparse.numblocks", str(len(entries)))]
        for offset, length in entries:
            records += [("GNU.sparse.offset", str(offset)), ("GNU.sparse.numbytes", str(length))]
        fake_name, body = name, data
    elif version == "0.1":
        flat = ",".join(f"{offset},{length}" for offset, length in entries)
        records = [
            ("GNU.sparse.size", str(real_size)),
            ("GNU.sparse.numblocks", str(len(entries))),
            ("GNU.sparse.name", name),
            ("GNU.sparse.map", flat),
        ]
        body = data
    else:
        records = [
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.name", name),
            ("GNU.sparse.realsize", str(real_size)),
        ]
        body = sparse1_map(entries) + data
    return pax_header(records) + member(
        fake_name.encode("utf-8", "surrogateescape")[:100], body, magic=POSIX_MAGIC, mtime=mtime
    )


def end(archive_len: int) -> bytes:
    """Two zero blocks, then zeros up to a multiple of RECORD."""
    total = archive_len + 2 * BLOCK
    return bytes(2 * BLOCK + (-total % RECORD))


def archive(*parts: bytes) -> bytes:
    """The parts, then a proper end-of-archive."""
    body = b"".join(parts)
    return body + end(len(body))


def pattern(offset: int, length: int, seed: int = 0) -> bytes:
    """Deterministic bytes that depend on the file offset (period 251, a prime,
    so misplaced data is noticed)."""
    table = random.Random(seed).randbytes(251)
    start = offset % 251
    repeats = (start + length) // 251 + 1
    return (table * repeats)[start : start + length]


def image_of(size: int, extents: Iterable[tuple[int, int]], seed: int = 0) -> bytes:
    """The whole apparent file: ``pattern`` in the extents, zeros elsewhere."""
    image = bytearray(size)
    for offset, length in extents:
        image[offset : offset + length] = pattern(offset, length, seed)
    return bytes(image)
