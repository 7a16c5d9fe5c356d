"""Unit tests of amibundle.sparse on real files in tmp_path: finding data
regions (SEEK_DATA/SEEK_HOLE), carving aligned zero granules out of them,
reading extents, and writing images back sparse.

File systems allocate in blocks (usually 4 KiB), so data_extents may report
more than was written; the checks are therefore properties (written bytes
covered, holes read as zeros) rather than exact lists, except where an
aligned hole is far larger than any block."""

from __future__ import annotations

import errno
import itertools
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amibundle.errors import StorageError
from amibundle.format.tar import Extent
from amibundle.sparse import (
    ZERO_GRANULE,
    SparseWriter,
    carve_zero_runs,
    data_extents,
    read_extents,
)
from tests.support.common import write_image

G = ZERO_GRANULE
MIB = 1 << 20


def examples(n: int) -> settings:
    """Hypothesis settings for tests that reuse one tmp_path file per example."""
    return settings(
        max_examples=n, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )


def nonzero(n: int, seed: int) -> bytes:
    """``n`` random bytes none of which is zero (so 'data' is unambiguous)."""
    return random.Random(seed).randbytes(n).replace(b"\0", b"\x01")


def extents_of(path: Path, size: int | None = None) -> list[Extent]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return data_extents(fd, path.stat().st_size if size is None else size)
    finally:
        os.close(fd)


def assert_well_formed(extents: list[Extent], size: int) -> None:
    """Sorted, disjoint, non-empty, inside [0, size)."""
    end = 0
    for e in extents:
        assert e.length > 0, extents
        assert e.offset >= end, extents
        end = e.offset + e.length
    assert end <= size


def gaps(extents: list[Extent], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that ``extents`` (sorted) do not cover."""
    result, cursor = [], start
    for e in extents:
        lo, hi = max(e.offset, start), min(e.offset + e.length, end)
        if lo >= hi:
            continue
        if lo > cursor:
            result.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < end:
        result.append((cursor, end))
    return result


def is_zero(data: bytes | memoryview) -> bool:
    return bytes(data).count(0) == len(data)


# --- data_extents -------------------------------------------------------------------

writes_strategy = st.lists(
    st.tuples(st.integers(0, 4 * MIB), st.integers(1, 200_000)), max_size=6
).map(lambda ws: [(off, nonzero(n, off ^ n)) for off, n in ws])


@examples(30)
@given(writes=writes_strategy, extra=st.integers(0, 3 * MIB))
def test_data_extents_cover_written_bytes_and_holes_read_as_zeros(
    tmp_path: Path, writes: list[tuple[int, bytes]], extra: int
) -> None:
    end_of_data = max((off + len(d) for off, d in writes), default=0)
    size = end_of_data + extra
    path = write_image(tmp_path / "img", size, writes)
    extents = extents_of(path)
    assert_well_formed(extents, size)
    for off, data in writes:  # every written byte is in some extent
        assert gaps(extents, off, off + len(data)) == []
    content = path.read_bytes()
    for lo, hi in gaps(extents, 0, size):
        assert is_zero(content[lo:hi])


@examples(20)
@given(writes=writes_strategy, cut=st.integers(0, 5 * MIB))
def test_data_extents_stop_at_the_given_size(
    tmp_path: Path, writes: list[tuple[int, bytes]], cut: int
) -> None:
    size = max((off + len(d) for off, d in writes), default=0) + MIB
    path = write_image(tmp_path / "img", size, writes)
    limit = min(cut, size)
    extents = extents_of(path, limit)
    assert_well_formed(extents, limit)
    for off, data in writes:
        assert gaps(extents, min(off, limit), min(off + len(data), limit)) == []


def test_large_aligned_holes_are_not_reported(tmp_path: Path) -> None:
    path = write_image(
        tmp_path / "img",
        16 * MIB,
        [(4 * MIB, nonzero(100_000, 1)), (10 * MIB, nonzero(5000, 2))],
    )
    if path.stat().st_blocks * 512 >= 16 * MIB:
        pytest.skip("this file system does not keep holes")
    extents = extents_of(path)
    covered = sum(e.length for e in extents)
    assert covered < 2 * MIB  # 105 kB of data, rounded up to blocks, not 16 MiB
    assert gaps(extents, 0, 4 * MIB) == [(0, 4 * MIB)]  # the leading hole
    assert gaps(extents, 11 * MIB, 16 * MIB) == [(11 * MIB, 16 * MIB)]  # the trailing hole
    assert gaps(extents, 5 * MIB, 10 * MIB) == [(5 * MIB, 10 * MIB)]


def test_fully_sparse_empty_and_dense_files(tmp_path: Path) -> None:
    assert extents_of(write_image(tmp_path / "holes", 8 * MIB)) == []
    assert extents_of(write_image(tmp_path / "empty", 0)) == []
    dense = tmp_path / "dense"
    dense.write_bytes(nonzero(3 * MIB + 5, 3))
    assert extents_of(dense) == [Extent(0, 3 * MIB + 5)]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_without_seek_data_the_whole_file_is_data(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_image(tmp_path / "img", 5 * MIB, [(MIB, b"x")])
    empty = write_image(tmp_path / "empty", 0)

    def no_seek_data(fd: int, pos: int, how: int) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "lseek", no_seek_data)
    assert extents_of(path) == [Extent(0, 5 * MIB)]
    assert extents_of(empty, 0) == []


def test_other_seek_errors_are_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "img", MIB, [(0, b"x")])

    def failing(fd: int, pos: int, how: int) -> int:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "lseek", failing)
    with pytest.raises(OSError, match="I/O error"):
        extents_of(path)


# --- carve_zero_runs ---------------------------------------------------------------------

segment_length = st.one_of(
    st.integers(1, 150_000),
    st.sampled_from([G - 1, G, G + 1, 2 * G, 3 * G - 7, 16 * G + 3]),
)
segments_strategy = st.lists(st.tuples(st.booleans(), segment_length), min_size=1, max_size=12)


def build(segments: list[tuple[bool, int]], seed: int, limit: int = 3 * MIB) -> bytes:
    """Data (True) and zero (False) segments, written densely: no holes."""
    parts, total = [], 0
    for i, (is_data, length) in enumerate(segments):
        length = min(length, limit - total)
        parts.append(nonzero(length, seed + i) if is_data else bytes(length))
        total += length
    return b"".join(parts)


@st.composite
def original_extents(draw: st.DrawFn, size: int) -> list[Extent]:
    """Either the whole file, or sorted disjoint pieces of it at any offsets."""
    if size == 0 or draw(st.booleans()):
        return [Extent(0, size)] if size else []
    cuts = sorted(set(draw(st.lists(st.integers(0, size), min_size=2, max_size=10))))
    pairs = list(itertools.pairwise(cuts))
    chosen = [Extent(a, b - a) for i, (a, b) in enumerate(pairs) if i % 2 == 0 and b > a]
    return chosen


def carve(path: Path, extents: list[Extent]) -> list[Extent]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return carve_zero_runs(fd, extents)
    finally:
        os.close(fd)


@examples(60)
@given(segments=segments_strategy, seed=st.integers(0, 1000), data=st.data())
def test_carving_removes_exactly_the_aligned_zero_granules(
    tmp_path: Path, segments: list[tuple[bool, int]], seed: int, data: st.DataObject
) -> None:
    content = build(segments, seed)
    path = tmp_path / "img"
    path.write_bytes(content)
    originals = data.draw(original_extents(len(content)))
    carved = carve(path, originals)
    assert_well_formed(carved, len(content))
    for piece in carved:  # each carved extent lies inside one original
        assert any(
            o.offset <= piece.offset and piece.offset + piece.length <= o.offset + o.length
            for o in originals
        ), (piece, originals)
    for o in originals:
        lo, hi = o.offset, o.offset + o.length
        # What carving dropped: zeros only, in whole aligned granules.
        for g_lo, g_hi in gaps(carved, lo, hi):
            assert g_lo % G == 0 and g_hi % G == 0, (g_lo, g_hi)
            assert is_zero(content[g_lo:g_hi])
        # And every aligned zero granule inside the original was dropped.
        first = -(-lo // G) * G
        for g in range(first, hi - G + 1, G):
            if is_zero(content[g : g + G]):
                assert gaps(carved, g, g + G) == [(g, g + G)], g


def test_carving_a_dense_dd_style_image(tmp_path: Path) -> None:
    """Zeros except two small writes: only their granules remain."""
    size = 4 * MIB
    path = tmp_path / "dense.img"
    path.write_bytes(bytes(size))
    with open(path, "r+b") as f:
        f.seek(MIB + 100)
        f.write(b"\x01" * 300)
        f.seek(2 * G - 10)  # straddles the boundary of granules 1 and 2
        f.write(b"\x02" * 20)
    assert carve(path, [Extent(0, size)]) == [Extent(G, 2 * G), Extent(MIB, G)]


def test_carving_keeps_unaligned_edges(tmp_path: Path) -> None:
    path = tmp_path / "zeros"
    path.write_bytes(bytes(4 * G))
    # Only the granules [G, 2G) and [2G, 3G) lie wholly inside the extent.
    assert carve(path, [Extent(100, 3 * G)]) == [Extent(100, G - 100), Extent(3 * G, 100)]
    assert carve(path, [Extent(1, G)]) == [Extent(1, G)]  # no whole granule inside
    assert carve(path, [Extent(0, 4 * G)]) == []


def test_carving_past_the_end_of_the_file_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(bytes(1000))  # zeros: the scan reads on into the missing part
    with pytest.raises(StorageError, match="changed size"):
        carve(path, [Extent(0, 2 * G)])


# --- read_extents ---------------------------------------------------------------------------


def read_all(path: Path, extents: list[Extent]) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        buffers = itertools.repeat(bytearray(MIB))
        return [bytes(view) for view in read_extents(fd, extents, buffers)]
    finally:
        os.close(fd)


def test_read_extents_yields_the_extent_bytes_in_pieces_of_at_most_a_read(tmp_path: Path) -> None:
    content = nonzero(5 * MIB, 4)
    path = tmp_path / "img"
    path.write_bytes(content)
    extents = [Extent(10, 100), Extent(MIB - 5, 2 * MIB + 10), Extent(4 * MIB, MIB)]
    pieces = read_all(path, extents)
    assert all(0 < len(p) <= MIB for p in pieces)
    expected = b"".join(content[e.offset : e.offset + e.length] for e in extents)
    assert b"".join(pieces) == expected


def test_read_extents_uses_the_buffers_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(nonzero(3 * MIB, 5))
    given_buffers = [bytearray(MIB) for _ in range(3)]
    fd = os.open(path, os.O_RDONLY)
    try:
        views = list(read_extents(fd, [Extent(0, 3 * MIB)], iter(given_buffers)))
    finally:
        os.close(fd)
    assert [v.obj for v in views] == given_buffers


def test_read_extents_of_a_shrunken_file_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"\x01" * 100)
    with pytest.raises(StorageError, match="changed size"):
        read_all(path, [Extent(50, 100)])


# --- SparseWriter -------------------------------------------------------------------------------


def write_sparse(path: Path, pieces: list[tuple[int, bytes]], size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer = SparseWriter(fd, str(path))
        for offset, data in pieces:
            writer.write(offset, memoryview(data))
        writer.finish(size)
    finally:
        os.close(fd)


def layout(granule_kinds: str) -> bytes:
    """One granule per letter: z = zeros, d = data, p = data then zeros."""
    chunks = {
        "z": bytes(G),
        "d": nonzero(G, 6),
        "p": nonzero(G // 2, 7) + bytes(G // 2),
    }
    return b"".join(chunks[k] for k in granule_kinds)


def test_zero_granules_are_not_allocated(tmp_path: Path) -> None:
    kinds = "zzzdzzpzzzzzzzzzdzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzd" + "z" * 40
    content = layout(kinds)
    path = tmp_path / "sparse.img"
    write_sparse(path, [(0, content)], len(content))
    assert path.read_bytes() == content
    allocated = path.stat().st_blocks * 512
    dense = tmp_path / "dense.img"
    dense.write_bytes(content)
    if dense.stat().st_blocks * 512 < len(content):
        pytest.skip("this file system compresses or deduplicates: allocation says nothing")
    data_granules = sum(k != "z" for k in kinds)
    assert allocated <= data_granules * G + 64 * 1024  # slack for extent metadata
    assert allocated >= data_granules * G // 2  # the data itself is there


def test_finish_sets_the_size_with_a_trailing_hole(tmp_path: Path) -> None:
    path = tmp_path / "img"
    write_sparse(path, [(5, b"abc")], 10 * MIB)
    assert path.stat().st_size == 10 * MIB
    content = path.read_bytes()
    assert content[5:8] == b"abc"
    assert is_zero(content[:5]) and is_zero(content[8:])
    assert path.stat().st_blocks * 512 <= 64 * 1024


@st.composite
def pieces_strategy(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]], int]:
    """An image (granule layout), the (offset, data) pieces a tar reader would
    hand over (holes between them skipped), and the final size."""
    kinds = draw(st.text(alphabet="zdp", min_size=0, max_size=40))
    content = bytearray(layout(kinds))
    cuts = sorted(draw(st.lists(st.integers(0, len(content)), max_size=8)))
    bounds = [0, *cuts, len(content)]
    pieces, skip = [], draw(st.lists(st.booleans(), min_size=len(bounds), max_size=len(bounds)))
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if skip[i]:  # a hole in the member: never written, must read as zeros
            content[lo:hi] = bytes(hi - lo)
        elif hi > lo:
            pieces.append((lo, bytes(content[lo:hi])))
    tail = draw(st.integers(0, 3 * G))
    return bytes(content) + bytes(tail), pieces, len(content) + tail


@examples(50)
@given(case=pieces_strategy())
def test_sparse_writer_round_trips(
    tmp_path: Path, case: tuple[bytes, list[tuple[int, bytes]], int]
) -> None:
    expected, pieces, size = case
    path = tmp_path / "img"
    path.unlink(missing_ok=True)
    write_sparse(path, pieces, size)
    assert path.stat().st_size == size
    assert path.read_bytes() == expected


def test_write_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        writer = SparseWriter(fd, "the/image")
        with pytest.raises(StorageError, match="cannot write the/image"):
            # Small pieces are joined before they are written: the error
            # comes with the write that holds them, at the latest at finish.
            writer.write(0, memoryview(b"data"))
            writer.finish(100)
        with pytest.raises(StorageError, match="cannot write the/image"):
            SparseWriter(fd, "the/image").finish(100)
    finally:
        os.close(fd)
