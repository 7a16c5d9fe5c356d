"""Unit tests of amibundle.parts: cutting ciphertext into parts (PartSplitter),
writing them into a folder with nothing left behind on failure
(DirectoryPartSink), and reading them back with every check (PartReader)."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amibundle.errors import IntegrityError, OutputExistsError, StorageError
from amibundle.folder import DirectoryPartSink
from amibundle.parts import PartReader, PartRecord, PartSpec, PartSplitter
from tests.support.common import tree
from tests.support.errors import cli_text


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def pieces_of(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    for lo, hi in itertools.pairwise(bounds):
        yield data[lo:hi]


@dataclass
class RecordingSink:
    """A PartSink that keeps everything in memory and checks the call order."""

    parts: list[bytearray] = field(default_factory=list)
    records: list[PartRecord] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    open: bool = False

    def open_part(self, index: int) -> None:
        assert not self.open and index == len(self.parts)
        self.parts.append(bytearray())
        self.open = True
        self.calls.append(f"open {index}")

    def write(self, data: memoryview) -> None:
        assert self.open and len(data) > 0
        self.parts[-1] += data

    def close_part(self, record: PartRecord) -> None:
        assert self.open
        self.open = False
        self.records.append(record)
        self.calls.append(f"close {record.index}")

    def commit(self, filenames: Sequence[str]) -> list[Path]:
        raise AssertionError("the splitter never commits")

    def abort(self) -> None:
        raise AssertionError("the splitter never aborts")


# --- PartSplitter -------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    part_size=st.one_of(st.integers(1, 40), st.integers(1, 5000)),
    length=st.one_of(st.integers(0, 20_000), st.sampled_from([0, 1, 16, 4096, 10_000])),
    seed=st.integers(0, 1000),
    cuts=st.lists(st.integers(0, 20_000), max_size=10),
)
def test_splitter_cuts_the_stream_into_parts(
    part_size: int, length: int, seed: int, cuts: list[int]
) -> None:
    data = random.Random(seed).randbytes(length)
    sink = RecordingSink()
    splitter = PartSplitter(sink, part_size)
    for piece in pieces_of(data, [min(c, length) for c in cuts]):
        splitter.take_ciphertext(memoryview(piece))
    records = splitter.finish()

    expected_count = -(-length // part_size)  # ceil; no empty last part
    assert len(records) == len(sink.parts) == expected_count
    assert records == sink.records
    assert b"".join(sink.parts) == data
    assert splitter.total == length
    for i, (record, part) in enumerate(zip(records, sink.parts, strict=True)):
        assert record.index == i
        assert record.size == len(part)
        assert record.sha1 == sha1(bytes(part))
        assert part == data[i * part_size : (i + 1) * part_size]
    assert all(r.size == part_size for r in records[:-1])
    if records:
        assert 0 < records[-1].size <= part_size
    assert sink.calls == [c for i in range(expected_count) for c in (f"open {i}", f"close {i}")]


def test_splitter_with_exact_multiple_has_no_empty_tail() -> None:
    sink = RecordingSink()
    splitter = PartSplitter(sink, 10)
    splitter.take_ciphertext(memoryview(b"x" * 30))
    assert [r.size for r in splitter.finish()] == [10, 10, 10]
    assert len(sink.parts) == 3


def test_splitter_of_nothing_makes_no_part() -> None:
    sink = RecordingSink()
    splitter = PartSplitter(sink, 10)
    splitter.take_ciphertext(memoryview(b""))
    assert splitter.finish() == []
    assert sink.calls == []


@pytest.mark.parametrize("size", [0, -1])
def test_splitter_needs_a_positive_part_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        PartSplitter(RecordingSink(), size)


# --- DirectoryPartSink -------------------------------------------------------------------


def write_parts(sink: DirectoryPartSink, parts: list[bytes]) -> list[PartRecord]:
    records = []
    for i, part in enumerate(parts):
        sink.open_part(i)
        sink.write(memoryview(part))
        record = PartRecord(i, len(part), sha1(part))
        sink.close_part(record)
        records.append(record)
    return records


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """A destination that already holds unrelated files (which must survive)."""
    folder = tmp_path / "dest"
    folder.mkdir()
    (folder / "unrelated.txt").write_text("keep me")
    (folder / ".hidden").write_text("keep me too")
    (folder / "sub").mkdir()
    return folder


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        name: None if (folder / name).is_dir() else (folder / name).read_bytes()
        for name in tree(folder)
    }


PARTS = [b"a" * 100, b"b" * 100, b"c" * 42]
NAMES = ["img.part.0", "img.part.1", "img.part.2"]


def test_commit_renames_parts_to_the_given_names(dest: Path) -> None:
    before = snapshot(dest)
    sink = DirectoryPartSink(dest, "img")
    write_parts(sink, PARTS)
    paths = sink.commit(NAMES)
    assert paths == [dest / n for n in NAMES]
    assert [p.read_bytes() for p in paths] == PARTS
    after = snapshot(dest)
    assert {k: v for k, v in after.items() if k not in NAMES} == before  # work folder gone
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_part_files_are_0600_while_being_written(dest: Path) -> None:
    old_umask = os.umask(0)  # the mode must come from the code, not the umask
    try:
        sink = DirectoryPartSink(dest, "img")
        sink.open_part(0)
        sink.write(memoryview(b"secret ciphertext"))
        work = [p for p in dest.iterdir() if p.name.startswith(f".amibundle-{os.getpid()}-")]
        assert len(work) == 1 and work[0].is_dir()
        assert stat.S_IMODE(work[0].stat().st_mode) == 0o700
        (temp,) = list(work[0].iterdir())
        assert stat.S_IMODE(temp.stat().st_mode) == 0o600
        sink.close_part(PartRecord(0, 17, sha1(b"secret ciphertext")))
        assert stat.S_IMODE(temp.stat().st_mode) == 0o600
        sink.abort()
    finally:
        os.umask(old_umask)


@pytest.mark.parametrize("stage", ["fresh", "open", "written", "closed", "many"])
def test_abort_leaves_the_destination_exactly_as_before(stage: str, dest: Path) -> None:
    before = snapshot(dest)
    sink = DirectoryPartSink(dest, "img")
    if stage in ("open", "written"):
        sink.open_part(0)
    if stage == "written":
        sink.write(memoryview(b"x" * 1000))
    if stage == "closed":
        write_parts(sink, PARTS[:1])
    if stage == "many":
        write_parts(sink, PARTS)
        sink.open_part(3)
        sink.write(memoryview(b"half"))
    sink.abort()
    assert snapshot(dest) == before


def test_existing_names_without_overwrite_are_refused_and_abort_cleans_up(dest: Path) -> None:
    (dest / "img.part.1").write_bytes(b"an older bundle")
    before = snapshot(dest)
    sink = DirectoryPartSink(dest, "img")
    write_parts(sink, PARTS)
    with pytest.raises(OutputExistsError) as err:
        sink.commit(NAMES)
    message = str(err.value)
    assert str(dest / "img.part.1") in message and "force=True" in message
    assert "--force" in cli_text(err)
    assert "\n" not in message
    assert not (dest / "img.part.0").exists()  # checked before anything is moved
    sink.abort()
    assert snapshot(dest) == before


def test_overwrite_replaces_existing_parts(dest: Path) -> None:
    (dest / "img.part.1").write_bytes(b"an older bundle")
    sink = DirectoryPartSink(dest, "img", overwrite=True)
    write_parts(sink, PARTS)
    sink.commit(NAMES)
    assert (dest / "img.part.1").read_bytes() == PARTS[1]


def test_two_sinks_in_one_folder_do_not_collide(dest: Path) -> None:
    one, two = DirectoryPartSink(dest, "img"), DirectoryPartSink(dest, "img")
    write_parts(one, [b"one"])
    write_parts(two, [b"two"])
    two.abort()
    assert one.commit(["img.part.0"])[0].read_bytes() == b"one"


def test_a_missing_destination_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot write to") as err:
        DirectoryPartSink(tmp_path / "absent", "img")
    assert str(tmp_path / "absent") in str(err.value)


# --- PartReader ------------------------------------------------------------------------


def make_parts(folder: Path, sizes: list[int], seed: int = 0) -> tuple[list[PartSpec], bytes]:
    rng = random.Random(seed)
    specs, chunks = [], []
    for i, size in enumerate(sizes):
        data = rng.randbytes(size)
        path = folder / f"b.part.{i:02d}"
        path.write_bytes(data)
        specs.append(PartSpec(path, sha1(data)))
        chunks.append(data)
    return specs, b"".join(chunks)


def read_through(reader: PartReader, sizes: Iterator[int] | None = None) -> bytes:
    out = bytearray()
    while True:
        buffer = bytearray(next(sizes) if sizes else 64 * 1024)
        n = reader.readinto(memoryview(buffer))
        if not n:
            return bytes(out)
        out += buffer[:n]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=0, max_size=6),
    buffer_sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=10),
    known_size=st.booleans(),
)
def test_reader_yields_the_concatenation(
    tmp_path: Path, sizes: list[int], buffer_sizes: list[int], known_size: bool
) -> None:
    specs, data = make_parts(tmp_path, sizes)
    seen: list[int] = []
    reader = PartReader(specs, len(data) if known_size else None, on_bytes=seen.append)
    cycle = iter(buffer_sizes * (len(data) + 2))
    assert read_through(reader, cycle) == data
    assert reader.total == sum(seen) == len(data)
    assert reader.checked == len(specs)
    assert reader.readinto(memoryview(bytearray(10))) == 0  # stays at the end
    reader.close()


def test_reader_is_a_readable_raw_stream(tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [1000, 1000, 5])
    with PartReader(specs, len(data)) as reader:
        assert reader.readable()
        assert reader.readall() == data


def read_fails(specs: list[PartSpec], bundled_size: int | None) -> str:
    reader = PartReader(specs, bundled_size)
    try:
        with pytest.raises(IntegrityError) as err:
            read_through(reader)
    finally:
        reader.close()
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("victim", [0, 1, 2])
@pytest.mark.parametrize("known_size", [True, False])
def test_a_damaged_part_is_named(victim: int, known_size: bool, tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    raw = bytearray(specs[victim].path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    specs[victim].path.write_bytes(bytes(raw))
    message = read_fails(specs, len(data) if known_size else None)
    assert f"part b.part.0{victim} is damaged" in message


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_a_truncated_part_is_named(victim: int, tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    path = specs[victim].path
    path.write_bytes(path.read_bytes()[:-7])
    assert f"b.part.0{victim}" in read_fails(specs, len(data))


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_an_extra_long_part_is_named(victim: int, tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    path = specs[victim].path
    path.write_bytes(path.read_bytes() + b"extra")
    message = read_fails(specs, len(data))
    assert f"b.part.0{victim}" in message
    if victim == 2:  # past the end of what the manifest promised
        assert "too long" in message
    # Without bundled_size the SHA-1 still catches it.
    assert f"b.part.0{victim}" in read_fails(specs, None)


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_a_missing_part_is_named(victim: int, tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    specs[victim].path.unlink()
    message = read_fails(specs, len(data))
    assert f"part b.part.0{victim} is missing from {tmp_path}" in message


def test_an_empty_part_is_named(tmp_path: Path) -> None:
    specs, _ = make_parts(tmp_path, [500, 1, 200])
    specs[1].path.write_bytes(b"")
    empty_spec = PartSpec(specs[1].path, sha1(b""))  # even with a matching digest
    message = read_fails([specs[0], empty_spec, specs[2]], None)
    assert "part b.part.01 is empty" in message


def test_an_unreadable_part_is_named(tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500])
    specs[1].path.unlink()
    specs[1].path.mkdir()  # a folder where the part should be
    assert "b.part.01" in read_fails(specs, len(data))


@pytest.mark.parametrize("delta", [1, 16, 1000])
def test_a_bundled_size_larger_than_the_parts_is_caught(delta: int, tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    message = read_fails(specs, len(data) + delta)
    assert f"the parts hold {len(data)} bytes" in message
    assert f"bundled_size {len(data) + delta}" in message


@pytest.mark.parametrize("delta", [1, 16, 201])
def test_a_bundled_size_smaller_than_the_parts_is_caught(delta: int, tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    message = read_fails(specs, len(data) - delta)
    assert f"bundled_size ({len(data) - delta} bytes)" in message
    assert "too long" in message


def test_parts_before_a_damaged_one_count_as_checked(tmp_path: Path) -> None:
    specs, data = make_parts(tmp_path, [500, 500, 200])
    specs[2].path.write_bytes(b"\0" * 200)
    reader = PartReader(specs, len(data))
    with pytest.raises(IntegrityError):
        read_through(reader)
    assert reader.checked == 2
    reader.close()
