"""Unit tests of amibundle.tarstream: writer/reader round trips, cross-checks
with Python's own tarfile reader, and hostile streams built by tests.tarfactory."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from amibundle.errors import TarFormatError
from amibundle.format import tar_reader
from amibundle.format.tar import (
    BLOCK_SIZE,
    RECORD_SIZE,
    Extent,
    Member,
    MemberInfo,
    padding,
    stored_size,
)
from amibundle.format.tar_reader import SingleMemberReader
from amibundle.format.tar_writer import encode_header, end_of_archive
from tests.support import tars as tf

GIB = 1 << 30


class TrickleStream:
    """A file-like object whose read() returns at most a random few bytes,
    as pipes and decompressors may."""

    def __init__(self, data: bytes, seed: int = 0, largest: int = 700) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._random = random.Random(seed)
        self._largest = largest

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._data)
        n = min(n, self._random.randint(1, self._largest))
        chunk = bytes(self._data[self._pos : self._pos + n])
        self._pos += len(chunk)
        return chunk


def write_archive(info: MemberInfo, seed: int = 0) -> bytes:
    """A complete archive with tarfactory.pattern data in each region."""
    regions = [(0, info.size)] if info.extents is None else pairs(info.extents)
    data = b"".join(tf.pattern(offset, length, seed) for offset, length in regions)
    assert len(data) == stored_size(info)
    body = encode_header(info) + data + padding(len(data))
    return body + end_of_archive(len(body))


def read_all(stream: object, chunk_size: int = 1 << 20) -> tuple[Member, bytes, int]:
    """Member, reconstructed image, bytes read; checks chunk order and sizes."""
    reader = SingleMemberReader(stream, chunk_size=chunk_size)  # type: ignore[arg-type]
    member = reader.read_header()
    image = bytearray(member.size)
    covered = []
    for offset, chunk in reader.iter_data():
        assert 0 < len(chunk) <= chunk_size
        assert not covered or offset >= covered[-1][0] + covered[-1][1]
        image[offset : offset + len(chunk)] = chunk
        covered.append((offset, len(chunk)))
    reader.finish()
    return member, bytes(image), reader.bytes_read


def read_error(data: bytes) -> str:
    """The TarFormatError message for reading ``data`` completely."""
    with pytest.raises(TarFormatError) as info:
        read_all(io.BytesIO(data))
    message = str(info.value)
    assert message and "\n" not in message
    return message


# ---------------------------------------------------------------- strategies

NAME_CHARS = st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",))


@st.composite
def member_names(draw: st.DrawFn) -> str:
    """Short, around the 100-byte name field, long (LongLink) and multi-byte names."""
    name = draw(
        st.one_of(
            st.text(NAME_CHARS, min_size=1, max_size=12),
            st.text(NAME_CHARS, min_size=90, max_size=150),
            st.text(st.sampled_from("aé€𝄞"), min_size=25, max_size=100),
            st.sampled_from(["a" * 99, "a" * 100, "a" * 101, "é" * 50, "a" + "é" * 50]),
        )
    )
    assume(name not in (".", "..") and 1 <= len(name.encode()) <= 300)
    return name


BOUNDARY_SIZES = [0, 1, 511, 512, 513, 1023, 1024, 8191, 8192, 9215, 9216, 9217, 10239, 10240]
# Map entries (extents + GNU's final (size, 0)): 4 fit in the header, 21 per extension block.
EXTENT_COUNTS = [0, 1, 2, 3, 4, 5, 23, 24, 25, 26, 44, 45, 46, 70]


@st.composite
def layouts(draw: st.DrawFn, max_size: int = 70_000) -> tuple[int, tuple[Extent, ...] | None]:
    """A size and either None (plain) or ascending disjoint non-empty extents,
    with data or holes at the start and the end."""
    size = draw(st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, max_size)))
    if draw(st.booleans()):
        return size, None
    count = min(draw(st.sampled_from(EXTENT_COUNTS)), size // 2)
    cuts = draw(
        st.lists(st.integers(0, size), min_size=2 * count, max_size=2 * count, unique=True).map(
            sorted
        )
    )
    if cuts and draw(st.booleans()):
        cuts[0] = 0  # data at the very start
    if cuts and draw(st.booleans()) and cuts[-2] < size:
        cuts[-1] = size  # data up to the very end
    extents = tuple(
        Extent(start, stop - start) for start, stop in zip(cuts[::2], cuts[1::2], strict=True)
    )
    return size, extents


@st.composite
def member_infos(draw: st.DrawFn, max_size: int = 70_000) -> MemberInfo:
    size, extents = draw(layouts(max_size))
    return MemberInfo(
        name=draw(member_names()),
        size=size,
        mode=draw(st.integers(0, 0o177777)),
        mtime=draw(st.integers(-(2**40), 2**40)),
        extents=extents,
    )


def pairs(extents: tuple[Extent, ...]) -> list[tuple[int, int]]:
    return [(extent.offset, extent.length) for extent in extents]


def expected_map(info: MemberInfo) -> tuple[Extent, ...]:
    if info.extents is None:
        return (Extent(0, info.size),) if info.size else ()
    return info.extents


# ---------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(info=member_infos(), seed=st.integers(0, 3), chunk_size=st.integers(1, 5000))
def test_round_trip(info: MemberInfo, seed: int, chunk_size: int) -> None:
    data = write_archive(info, seed)
    assert len(data) % RECORD_SIZE == 0
    member, image, nread = read_all(TrickleStream(data, seed), chunk_size=max(chunk_size, 64))
    assert member == Member(
        info.name, info.size, info.mode & 0o7777, info.mtime, expected_map(info)
    )
    assert image == tf.image_of(info.size, pairs(expected_map(info)), seed)
    assert nread == len(data)


@settings(max_examples=100, deadline=None)
@given(info=member_infos(max_size=40_000), seed=st.integers(0, 3))
def test_python_tarfile_reads_what_we_write(info: MemberInfo, seed: int) -> None:
    """An independent reader agrees on name, size, mode, mtime, map and content."""
    data = write_archive(info, seed)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8") as archive:
        members = archive.getmembers()
        assert len(members) == 1
        (item,) = members
        assert item.name == info.name
        assert item.size == info.size
        assert item.mode == info.mode & 0o7777
        assert item.mtime == info.mtime
        assert (item.uid, item.gid, item.uname, item.gname) == (0, 0, "root", "root")
        if info.extents is None:
            assert item.type == tarfile.REGTYPE and not item.issparse()
        else:
            assert item.issparse()
            real = [(offset, length) for offset, length in item.sparse if length]
            assert real == [(e.offset, e.length) for e in info.extents]
        extracted = archive.extractfile(item)
        assert extracted is not None
        assert extracted.read() == tf.image_of(info.size, pairs(expected_map(info)), seed)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(8 * GIB - 2, 1 << 45),
    cuts=st.lists(st.integers(0, 1 << 45), min_size=0, max_size=60, unique=True),
    plain=st.booleans(),
    mtime=st.one_of(st.integers(0, 2**34), st.integers(2**33, 2**60)),
)
def test_huge_headers_round_trip_without_data(
    size: int, cuts: list[int], plain: bool, mtime: int
) -> None:
    """Sizes and offsets >= 8 GiB need base-256; check headers only (no data)."""
    points = sorted(c for c in cuts if c <= size)
    extents = tuple(
        Extent(a, b - a) for a, b in zip(points[::2], points[1::2], strict=False) if b > a
    )
    info = MemberInfo("huge.img", size, 0o600, mtime, None if plain else extents)
    head = encode_header(info)
    reader = SingleMemberReader(io.BytesIO(head))
    member = reader.read_header()
    assert member == Member("huge.img", size, 0o600, mtime, expected_map(info))
    assert reader.bytes_read == len(head)
    # Python's tarfile decodes GNU base-256 on its own; it parses the first header eagerly.
    with tarfile.open(fileobj=io.BytesIO(head + bytes(BLOCK_SIZE)), mode="r:") as archive:
        first = archive.firstmember
        assert first is not None
        assert first.size == size and first.mtime == mtime
        if not plain:
            assert [(o, n) for o, n in first.sparse if n] == [(e.offset, e.length) for e in extents]


# ---------------------------------------------------------------- writer details


def test_header_layout_follows_gnu_old_format() -> None:
    """Field positions and encodings from the spec, read with plain slicing."""
    extents = tuple(Extent(i * 8192, 100) for i in range(30))  # 31 entries with (size, 0)
    info = MemberInfo("n" * 120, 9 * GIB, 0o104755, 1_700_000_000, extents)
    head = encode_header(info)
    assert len(head) == 512 * (1 + 1 + 1 + 2)  # LongLink header + name block, main, 2 extensions
    link, main, ext1, ext2 = head[:512], head[1024:1536], head[1536:2048], head[2048:]
    assert link[:14] == b"././@LongLink\0" and link[156:157] == b"L"
    assert link[124:136] == b"%011o\0" % 121 and head[512:633] == b"n" * 120 + b"\0"
    assert main[:100] == b"n" * 100 and main[156:157] == b"S"
    assert main[100:108] == b"0004755\0"  # only the permission bits
    assert main[108:124] == b"0000000\x000000000\0"
    assert main[124:136] == b"%011o\0" % 3000  # stored bytes
    assert main[136:148] == b"%011o\0" % 1_700_000_000
    assert main[257:265] == b"ustar  \0"
    assert main[265:297].rstrip(b"\0") == b"root" and main[297:329].rstrip(b"\0") == b"root"
    assert main[386:410] == b"%011o\0%011o\0" % (0, 100)
    assert main[482] == 1 and main[483:495] == b"\x80" + (9 * GIB).to_bytes(11, "big")
    assert ext1[0:24] == b"%011o\0%011o\0" % (4 * 8192, 100) and ext1[504] == 1
    assert ext2[5 * 24 : 6 * 24] == b"\x80" + (9 * GIB).to_bytes(11, "big") + b"%011o\0" % 0
    assert ext2[6 * 24 :] == bytes(512 - 6 * 24)  # slots after the last entry stay empty
    for block in (link, main):
        chk = block[148:156]
        assert chk[6:] == b"\0 "
        assert int(chk[:6], 8) == sum(block[:148]) + 8 * 32 + sum(block[156:])


def test_short_names_need_no_long_link() -> None:
    assert len(encode_header(MemberInfo("x" * 100, 1, 0o644, 0, None))) == 512
    assert len(encode_header(MemberInfo("x" * 101, 1, 0o644, 0, None))) == 1536


@given(st.integers(0, 10**7).map(lambda n: n * BLOCK_SIZE))
def test_end_of_archive(nbytes: int) -> None:
    tail = end_of_archive(nbytes)
    assert (nbytes + len(tail)) % RECORD_SIZE == 0
    assert 2 * BLOCK_SIZE <= len(tail) < 2 * BLOCK_SIZE + RECORD_SIZE
    assert not any(tail)


@given(st.integers(0, 10**9))
def test_padding(nbytes: int) -> None:
    pad = padding(nbytes)
    assert (nbytes + len(pad)) % BLOCK_SIZE == 0 and len(pad) < BLOCK_SIZE and not any(pad)


@pytest.mark.parametrize(
    "info",
    [
        MemberInfo("", 1, 0o644, 0, None),
        MemberInfo("a/b", 1, 0o644, 0, None),
        MemberInfo("..", 1, 0o644, 0, None),
        MemberInfo("a\0b", 1, 0o644, 0, None),
        MemberInfo("a", -1, 0o644, 0, None),
        MemberInfo("a", 10, 0o644, 0, (Extent(0, 0),)),
        MemberInfo("a", 10, 0o644, 0, (Extent(4, 4), Extent(6, 2))),
        MemberInfo("a", 10, 0o644, 0, (Extent(4, 2), Extent(0, 2))),
        MemberInfo("a", 10, 0o644, 0, (Extent(8, 3),)),
        MemberInfo("a", 10, 0o644, 2**100, None),
    ],
    ids=[
        "empty",
        "slash",
        "dotdot",
        "nul",
        "negative",
        "zero-extent",
        "overlap",
        "descending",
        "beyond-size",
        "mtime-too-big",
    ],
)
def test_writer_rejects_impossible_layouts(info: MemberInfo) -> None:
    with pytest.raises(ValueError):
        encode_header(info)


def test_end_of_archive_needs_block_multiple() -> None:
    with pytest.raises(ValueError):
        end_of_archive(100)


# ---------------------------------------------------------------- reader: accepted inputs


def test_reads_factory_plain_member_with_trickling_stream() -> None:
    data = tf.archive(tf.member("disk.img", tf.pattern(0, 5000), mode=0o640, mtime=12345))
    member, image, nread = read_all(TrickleStream(data, largest=3), chunk_size=1000)
    assert member == Member("disk.img", 5000, 0o640, 12345, (Extent(0, 5000),))
    assert image == tf.pattern(0, 5000) and nread == len(data)


@pytest.mark.parametrize("typeflag", [b"0", b"\0", b"7"])
def test_regular_typeflags(typeflag: bytes) -> None:
    member, image, _ = read_all(io.BytesIO(tf.archive(tf.member("f", b"abc", typeflag=typeflag))))
    assert member.name == "f" and image == b"abc"


def test_signed_checksum_and_non_ascii_name() -> None:
    name = "dìsk-ünïcode.img"
    data = tf.archive(tf.member(name, b"x", checksum="signed"))
    assert read_all(io.BytesIO(data))[0].name == name


def test_base256_numbers_anywhere() -> None:
    data = tf.archive(tf.member("f", b"hello", size=tf.base256(5, 12), mtime=tf.base256(-7, 12)))
    member, image, _ = read_all(io.BytesIO(data))
    assert (member.size, member.mtime, image) == (5, -7, b"hello")


def test_octal_fields_with_spaces_as_old_tars_write_them() -> None:
    data = tf.archive(tf.member("f", b"hello", size=b"     5 \0\0\0\0\0", mode=b" 644 \0\0\0"))
    member, image, _ = read_all(io.BytesIO(data))
    assert (member.size, member.mode, image) == (5, 0o644, b"hello")


def test_ustar_prefix_is_part_of_the_name() -> None:
    data = tf.archive(tf.member("file", b"x", magic=tf.POSIX_MAGIC, prefix="dir"))
    assert "'dir/file'" in read_error(data)


def test_old_gnu_header_has_no_prefix() -> None:
    """In old-GNU headers bytes 345.. hold atime/ctime, not a name prefix."""
    fields = {345: tf.octal(1_700_000_000, 12), 357: tf.octal(1_700_000_000, 12)}
    data = tf.archive(tf.member("file", b"x", fields=fields))
    assert read_all(io.BytesIO(data))[0].name == "file"


def test_long_link_name() -> None:
    name = "é" * 150
    data = tf.archive(tf.long_name(name), tf.member(name.encode()[:100], b"data"))
    assert read_all(io.BytesIO(data))[0].name == name


def test_pax_path_size_mtime_override_and_global_header_ignored() -> None:
    name = "p" * 180
    data = tf.archive(
        tf.pax_header([("comment", "x")], typeflag=b"g"),
        tf.pax_header([("path", name), ("size", "6"), ("mtime", "1700000000.75"), ("uid", "5")]),
        tf.member("short", b"sixsix", size=0, magic=tf.POSIX_MAGIC),
    )
    member, image, _ = read_all(io.BytesIO(data))
    assert (member.name, member.size, member.mtime, image) == (name, 6, 1_700_000_000, b"sixsix")


def test_pax_path_wins_over_long_link() -> None:
    data = tf.archive(
        tf.long_name("from-longlink"), tf.pax_header([("path", "from-pax")]), tf.member("h", b"")
    )
    assert read_all(io.BytesIO(data))[0].name == "from-pax"


SPARSE_CASES = [
    (20_000, [(0, 1000), (5000, 600), (20_000, 0)]),
    (20_000, [(4096, 4096), (16_384, 3616)]),
    (1 << 20, [(1 << 20, 0)]),
    (300_000, [(i * 4096, 512) for i in range(60)] + [(300_000, 0)]),
]


@pytest.mark.parametrize("real_size, entries", SPARSE_CASES)
@pytest.mark.parametrize("version", ["old", "0.0", "0.1", "1.0"])
def test_sparse_formats(version: str, real_size: int, entries: list[tuple[int, int]]) -> None:
    stored = b"".join(tf.pattern(offset, length) for offset, length in entries)
    if version == "old":
        built = tf.old_gnu_sparse("sparse.img", real_size, entries, stored, mtime=99)
    else:
        built = tf.pax_sparse_member(
            "sparse.img", real_size, entries, stored, version=version, mtime=99
        )
    member, image, _ = read_all(TrickleStream(tf.archive(built)), chunk_size=777)
    expected = tuple(Extent(offset, length) for offset, length in entries if length)
    assert member == Member("sparse.img", real_size, 0o644, 99, expected)
    assert image == tf.image_of(real_size, entries)


def test_finish_skips_unread_data_and_accepts_trailing_zeros() -> None:
    data = tf.archive(tf.member("f", bytes(3000))) + bytes(RECORD_SIZE * 3 + 7)
    reader = SingleMemberReader(io.BytesIO(data), chunk_size=100)
    reader.read_header()
    next(iter(reader.iter_data()))
    reader.finish()
    assert reader.bytes_read == len(data)


def test_reader_api_order_is_enforced() -> None:
    reader = SingleMemberReader(io.BytesIO(tf.archive(tf.member("f", b"x"))))
    with pytest.raises(RuntimeError):
        reader.iter_data()
    reader.read_header()
    with pytest.raises(RuntimeError):
        reader.read_header()


# ---------------------------------------------------------------- reader: hostile inputs

ok_member = tf.member("f", b"abc")
huge = tf.base256(1 << 40, 12)


def many_globals(n: int) -> bytes:
    return b"".join(tf.pax_header([("c", str(i))], typeflag=b"g") for i in range(n))


HOSTILE = {
    "empty": (b"", "the tar stream is empty"),
    "short-header": (ok_member[:100], "ends early"),
    "truncated-data": (tf.header("f", size=5000) + bytes(1024), "ends early"),
    "no-end-marker": (ok_member, "ends early, before its end-of-archive"),
    "one-zero-block": (ok_member + bytes(512), "ends early, before its end-of-archive"),
    "only-zeros": (bytes(10240), "holds no file"),
    "not-tar": (b"\x1f\x8b" + bytes(510) + bytes(RECORD_SIZE), "checksum"),
    "bad-checksum": (tf.archive(tf.member("f", b"abc", checksum="bad")), "checksum"),
    "blank-checksum": (tf.archive(tf.member("f", b"abc", checksum="blank")), "checksum"),
    "symlink": (
        tf.archive(tf.header("f", typeflag=b"2", linkname="/etc/passwd")),
        "'f' is a symbolic link; a bundle must hold one regular file",
    ),
    "hardlink": (tf.archive(tf.header("f", typeflag=b"1", linkname="g")), "is a hard link"),
    "chardev": (tf.archive(tf.header("f", typeflag=b"3")), "is a character device"),
    "blockdev": (tf.archive(tf.header("f", typeflag=b"4")), "is a block device"),
    "directory": (tf.archive(tf.header("d/", typeflag=b"5")), "'d/' is a directory"),
    "fifo": (tf.archive(tf.header("f", typeflag=b"6")), "is a FIFO"),
    "long-symlink": (
        tf.archive(tf.long_name("t" * 200, typeflag=b"K"), tf.header("f", typeflag=b"2")),
        "is a symbolic link",
    ),
    "volume-label": (tf.archive(tf.header("f", typeflag=b"V")), "unsupported tar entry type 'V'"),
    "multivolume": (tf.archive(tf.header("f", typeflag=b"M")), "unsupported tar entry type 'M'"),
    "binary-type": (tf.archive(tf.header("f", typeflag=b"\x01")), "type '\\x01'"),
    "empty-name": (tf.archive(tf.member("", b"x")), "empty name"),
    "slash-name": (tf.archive(tf.member("a/b", b"x")), "'a/b' contains '/'"),
    "absolute-name": (tf.archive(tf.member("/etc/passwd", b"x")), "contains '/'"),
    "dot-name": (tf.archive(tf.member(".", b"x")), "'.' is not a file name"),
    "dotdot-name": (tf.archive(tf.member("..", b"x")), "'..' is not a file name"),
    "nul-in-pax-path": (tf.archive(tf.pax_header([("path", "a\0b")]), tf.member("f", b"x")), "NUL"),
    "slash-in-longlink": (
        tf.archive(tf.long_name("../../x" * 20), tf.member("f", b"x")),
        "contains '/'",
    ),
    "slash-in-sparse-name": (
        tf.archive(tf.pax_sparse_member("a/b", 10, [(0, 1)], b"x", version="1.0")),
        "contains '/'",
    ),
    "second-member": (tf.archive(ok_member, ok_member), "second member"),
    "garbage-after-member": (ok_member + b"\x01" * 512 + bytes(RECORD_SIZE), "unexpected data"),
    "garbage-after-end": (tf.archive(ok_member) + b"\0\0\x01", "non-zero data after"),
    "garbage-in-record-pad": (
        ok_member + bytes(2048) + b"junk" + bytes(100),
        "non-zero data after",
    ),
    "bad-octal-size": (tf.archive(tf.header("f", size=b"0000000012x\0")), "malformed size"),
    "negative-size": (tf.archive(tf.header("f", size=tf.base256(-5, 12))), "impossible size"),
    "size-over-off_t": (tf.archive(tf.header("f", size=tf.base256(1 << 70, 12))), "impossible"),
    "huge-pax": (tf.header("p", typeflag=b"x", size=huge), "PAX header of 1099511627776 bytes"),
    "huge-global-pax": (tf.header("p", typeflag=b"g", size=2 << 20), "too large"),
    "huge-longlink": (tf.long_name("x", size=huge), "GNU long name of 1099511627776 bytes"),
    "pax-total-over-cap": (tf.pax_header(raw=bytes(600_000)) * 2 + ok_member, "exceed 1 MiB"),
    "too-many-meta": (many_globals(65) + tf.archive(ok_member), "more than 64"),
    "pax-bad-length": (tf.archive(tf.pax_header(raw=b"99 path=x\n"), ok_member), "malformed PAX"),
    "pax-no-equals": (tf.archive(tf.pax_header(raw=b"9 pathx\n"), ok_member), "malformed PAX"),
    "pax-no-newline": (tf.archive(tf.pax_header(raw=b"9 path=xy"), ok_member), "malformed PAX"),
    "pax-trailing-junk": (
        tf.archive(tf.pax_header(raw=tf.pax_record("a", "b") + b"zz"), ok_member),
        "malformed PAX",
    ),
    "pax-bad-size": (tf.archive(tf.pax_header([("size", "12abc")]), ok_member), "PAX size"),
    "pax-huge-size-digits": (
        tf.archive(tf.pax_header([("size", "9" * 5000)]), ok_member),
        "PAX size",
    ),
    "pax-bad-mtime": (tf.archive(tf.pax_header([("mtime", "soon")]), ok_member), "PAX mtime"),
    "pax-truncated": (tf.pax_header([("path", "x" * 2000)])[:1024], "ends early"),
    "pax-then-end": (tf.archive(tf.pax_header([("path", "x")])), "holds no file"),
}


SPARSE1_RECORDS = [
    ("GNU.sparse.major", "1"),
    ("GNU.sparse.minor", "0"),
    ("GNU.sparse.realsize", "10"),
]


def sparse_case(entries: list[tuple[int, int]], real_size: int, stored: int) -> bytes:
    return tf.archive(tf.old_gnu_sparse("s", real_size, entries, bytes(stored)))


HOSTILE.update(
    {
        "sparse-descending": (sparse_case([(1000, 10), (0, 10)], 2000, 20), "not ascending"),
        "sparse-overlap": (sparse_case([(0, 100), (50, 100)], 2000, 200), "overlaps"),
        "sparse-beyond-size": (
            sparse_case([(0, 10), (1995, 10)], 2000, 20),
            "beyond the file size",
        ),
        "sparse-terminator-beyond": (sparse_case([(0, 10), (3000, 0)], 2000, 10), "beyond"),
        "sparse-stored-mismatch": (sparse_case([(0, 10)], 2000, 30), "holds 10 bytes of data"),
        "sparse-offset-overflow": (
            sparse_case([(0, 1), (tf.base256(1 << 80, 12), 1)], 2000, 2),
            "impossible sparse offset",
        ),
        "sparse-empty-slot-then-extension": (
            tf.archive(tf.old_gnu_sparse("s", 100, [(0, 1)], b"x", isextended=True) + bytes(512)),
            "empty slot",
        ),
        "sparse-extension-truncated": (
            tf.old_gnu_sparse("s", 10**6, [(i * 10, 1) for i in range(30)], bytes(30))[:1024],
            "ends early",
        ),
        "sparse1-huge-count": (
            tf.archive(
                tf.pax_header(SPARSE1_RECORDS), tf.member("f", b"999999999999\n".ljust(512, b"\0"))
            ),
            "too many entries",
        ),
        "sparse1-map-past-data": (
            tf.archive(
                tf.pax_header(SPARSE1_RECORDS), tf.member("f", b"1000\n" + b"1\n" * 253 + b"7")
            ),
            "runs past",
        ),
        "sparse1-long-line": (
            tf.archive(tf.pax_header(SPARSE1_RECORDS), tf.member("f", b"1" * 2048)),
            "malformed GNU sparse 1.0 map",
        ),
        "sparse1-no-realsize": (
            tf.archive(
                tf.pax_header([("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0")]),
                tf.member("f", tf.sparse1_map([(0, 1)]) + b"x"),
            ),
            "realsize",
        ),
        "sparse-version-2": (
            tf.archive(
                tf.pax_header([("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]), ok_member
            ),
            "unsupported GNU sparse format 2.0",
        ),
        "sparse01-odd-map": (
            tf.archive(
                tf.pax_header([("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,1,5")]),
                tf.member("f", b"x"),
            ),
            "odd number",
        ),
        "sparse01-bad-number": (
            tf.archive(
                tf.pax_header([("GNU.sparse.size", "10"), ("GNU.sparse.map", "0,-1")]),
                tf.member("f", b"x"),
            ),
            "GNU.sparse.map",
        ),
        "sparse00-lonely-offset": (
            tf.archive(
                tf.pax_header([("GNU.sparse.size", "10"), ("GNU.sparse.offset", "0")]),
                tf.member("f", b"x"),
            ),
            "without its GNU.sparse.numbytes",
        ),
        "sparse00-numbytes-first": (
            tf.archive(
                tf.pax_header(
                    [
                        ("GNU.sparse.size", "10"),
                        ("GNU.sparse.numbytes", "1"),
                        ("GNU.sparse.offset", "0"),
                    ]
                ),
                tf.member("f", b"x"),
            ),
            "without a GNU.sparse.offset",
        ),
        "sparse00-numblocks-lies": (
            tf.archive(
                tf.pax_header(
                    [
                        ("GNU.sparse.size", "10"),
                        ("GNU.sparse.numblocks", "2"),
                        ("GNU.sparse.offset", "0"),
                        ("GNU.sparse.numbytes", "1"),
                    ]
                ),
                tf.member("f", b"x"),
            ),
            "numblocks",
        ),
        "sparse00-no-size": (
            tf.archive(
                tf.pax_header([("GNU.sparse.offset", "0"), ("GNU.sparse.numbytes", "1")]),
                tf.member("f", b"x"),
            ),
            "GNU.sparse.size",
        ),
    }
)


@pytest.mark.parametrize("data, expected", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_streams_are_refused(data: bytes, expected: str) -> None:
    assert expected in read_error(data)


def test_old_gnu_map_entry_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension-block chain stops at the entry cap instead of growing forever."""
    monkeypatch.setattr(tar_reader, "MAX_SPARSE_ENTRIES", 50)
    entries = [(i * 10, 1) for i in range(200)]
    data = tf.archive(tf.old_gnu_sparse("s", 10_000, entries, bytes(200)))
    assert "too many entries" in read_error(data)


def test_refusal_happens_before_reading_huge_data() -> None:
    """A PAX header claiming 1 TiB is refused after reading its header block only."""
    stream = io.BytesIO(tf.header("p", typeflag=b"x", size=huge) + bytes(4 * BLOCK_SIZE))
    reader = SingleMemberReader(stream)
    with pytest.raises(TarFormatError, match="too large"):
        reader.read_header()
    assert reader.bytes_read == BLOCK_SIZE


def test_messages_stay_short_for_huge_names() -> None:
    data = tf.archive(tf.pax_header([("path", "a/" + "x" * 500_000)]), tf.member("f", b"x"))
    message = read_error(data)
    assert "contains '/'" in message and len(message) < 400
