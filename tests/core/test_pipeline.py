"""The streaming engine, amibundle.pipeline, end to end in memory: an image file
streamed by bundle_stream into an in-memory part sink, the parts written to
temporary files and read back through a real PartReader by unbundle_stream.
Also what the stages promise each other: the tar stream's length and digest,
progress that adds up, errors that propagate and leave no thread behind, and
damage found as IntegrityError."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amibundle.compression import Compression, open_compressor
from amibundle.crypto import AES_BLOCK, BundleKey, CbcEncryptor
from amibundle.errors import IntegrityError, TarFormatError
from amibundle.format.tar import Extent, Member, MemberInfo
from amibundle.format.tar_writer import tar_size
from amibundle.parts import PartReader, PartRecord, PartSpec
from amibundle.pipeline import (
    BundleStreamResult,
    Codec,
    UnbundleStreamResult,
    bundle_stream,
    read_all_parts,
    tar_stream,
    unbundle_stream,
)
from amibundle.progress import Stage

KEY = BundleKey(key=bytes(range(16)), iv=bytes(range(16, 32)))


def sha1(data: bytes | bytearray) -> str:
    return hashlib.sha1(data).hexdigest()


# --- in-memory ends of the pipeline -------------------------------------------------


@dataclass
class MemorySink:
    """A PartSink keeping the parts in memory; it checks the call order and
    can be told to fail when a given part is opened."""

    fail_at_part: int | None = None
    parts: list[bytearray] = field(default_factory=list)
    records: list[PartRecord] = field(default_factory=list)
    is_open: bool = False
    aborts: int = 0

    def open_part(self, index: int) -> None:
        assert not self.is_open and index == len(self.parts)
        if index == self.fail_at_part:
            raise SinkFailure(f"cannot open part {index}")
        self.parts.append(bytearray())
        self.is_open = True

    def write(self, data: memoryview) -> None:
        assert self.is_open
        self.parts[-1] += data  # copies: the view is only valid during the call

    def close_part(self, record: PartRecord) -> None:
        assert self.is_open
        self.is_open = False
        self.records.append(record)

    def commit(self, filenames: Sequence[str]) -> list[Path]:
        raise AssertionError("bundle_stream leaves commit to its caller")

    def abort(self) -> None:
        self.aborts += 1  # on failure only; may come while a write is in progress


class SinkFailure(Exception):
    pass


class ListenerFailure(Exception):
    pass


@dataclass
class MemoryImage:
    """A MemberWriter writing into memory (holes stay zero)."""

    data: bytearray = field(default_factory=bytearray)
    finished: int | None = None
    fail_on_write: bool = False

    def write(self, offset: int, data: memoryview) -> None:
        if self.fail_on_write:
            raise SinkFailure("disk full")
        end = offset + len(data)
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data

    def finish(self, size: int) -> None:
        assert self.finished is None
        self.finished = size
        self.data.extend(bytes(max(0, size - len(self.data))))
        del self.data[size:]


@dataclass
class RecordingProgress:
    """Records every call; raises ListenerFailure at the n-th advance if asked."""

    fail_at_advance: int | None = None
    events: list[tuple[str, Stage, object]] = field(default_factory=list)
    advances: int = 0

    def start(self, stage: Stage, total: int | None) -> None:
        self.events.append(("start", stage, total))

    def advance(self, stage: Stage, nbytes: int) -> None:
        self.events.append(("advance", stage, nbytes))
        self.advances += 1
        if self.advances == self.fail_at_advance:
            raise ListenerFailure("stop")

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        self.events.append(("finish", stage, error))

    def advanced(self, stage: Stage) -> int:
        return sum(
            int(n)  # type: ignore[call-overload]
            for kind, s, n in self.events
            if kind == "advance" and s is stage
        )


# --- images and bundles -------------------------------------------------------------


def make_image(folder: Path, size: int, extents: tuple[Extent, ...] | None, seed: int) -> Path:
    """A sparse file of ``size`` bytes with data in ``extents`` (everywhere when
    None): random at even positions, compressible text at odd ones."""
    path = folder / "disk.img"
    regions = extents if extents is not None else ((Extent(0, size),) if size else ())
    with open(path, "wb") as f:
        f.truncate(size)
        for number, extent in enumerate(regions):
            if number % 2 == 0:
                chunk = hashlib.sha256(f"{seed}-{number}".encode()).digest() * (
                    extent.length // 32 + 1
                )
                chunk = bytes(b ^ (i * 7 % 251) for i, b in enumerate(chunk[: extent.length]))
            else:
                chunk = (b"amibundle %d " % seed * (extent.length // 10 + 1))[: extent.length]
            f.seek(extent.offset)
            f.write(chunk)
    return path


def member_for(path: Path, extents: tuple[Extent, ...] | None) -> MemberInfo:
    return MemberInfo(
        name=path.name,
        size=path.stat().st_size,
        mode=0o640,
        mtime=1_700_000_000,
        extents=extents,
    )


def bundle(
    image: Path,
    member: MemberInfo,
    *,
    part_size: int,
    codec: Codec,
    sink: MemorySink | None = None,
    progress: RecordingProgress | None = None,
) -> tuple[BundleStreamResult, MemorySink]:
    sink = sink or MemorySink()
    fd = os.open(image, os.O_RDONLY)
    try:
        result = bundle_stream(
            fd, member, KEY, sink, part_size=part_size, codec=codec, progress=progress
        )
    finally:
        os.close(fd)
    return result, sink


def write_parts(folder: Path, parts: Sequence[bytes | bytearray]) -> list[PartSpec]:
    """Each part as a file, with the SHA-1 of what the file holds."""
    specs = []
    for index, data in enumerate(parts):
        path = folder / f"disk.img.part.{index}"
        path.write_bytes(data)
        specs.append(PartSpec(path, sha1(data)))
    return specs


def read_back(
    folder: Path,
    parts: Sequence[bytes | bytearray],
    bundled_size: int | None,
    *,
    key: BundleKey = KEY,
    progress: RecordingProgress | None = None,
    stage: Stage = Stage.EXTRACT,
    output: MemoryImage | None = None,
) -> tuple[Member, MemoryImage, UnbundleStreamResult]:
    """unbundle_stream over the parts as files; returns the member it was
    given, the image it wrote and the stream result."""
    out = output or MemoryImage()
    seen: list[Member] = []

    def open_output(member: Member) -> MemoryImage:
        seen.append(member)
        return out

    reader = PartReader(write_parts(folder, parts), bundled_size)
    try:
        result = unbundle_stream(reader, key, open_output, progress=progress, stage=stage)
    finally:
        reader.close()
    assert len(seen) == 1
    return seen[0], out, result


def new_threads(before: set[threading.Thread], grace: float = 2.0) -> list[str]:
    """Threads started since ``before`` that are still alive after ``grace``
    seconds (joined threads disappear at once; leaked ones never do)."""
    deadline = time.monotonic() + grace
    while True:
        alive = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not alive or time.monotonic() > deadline:
            return [t.name for t in alive]
        time.sleep(0.01)


def amibundle_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("amibundle-")]


# --- round trips ----------------------------------------------------------------------

LAYOUTS: dict[str, tuple[int, tuple[Extent, ...] | None]] = {
    "dense": (200_000, None),
    "empty dense": (0, None),
    "sparse": (300_000, (Extent(4096, 50_000), Extent(65_536, 1), Extent(131_072, 70_000))),
    "sparse with data at both ends": (100_000, (Extent(0, 10), Extent(99_990, 10))),
    "all hole": (1 << 20, ()),
    "many extents": (200_000, tuple(Extent(i * 2000, 700 + i) for i in range(60))),
}


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.value)
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_round_trip(layout: str, threads: int, compression: Compression, tmp_path: Path) -> None:
    size, extents = LAYOUTS[layout]
    image = make_image(tmp_path, size, extents, seed=len(layout))
    member = member_for(image, extents)
    part_size = 10_000
    result, sink = bundle(
        image, member, part_size=part_size, codec=Codec(compression, None, threads)
    )

    # the parts: full-size but the last, adding up to bundled_size, hashed right
    sizes = [len(part) for part in sink.parts]
    assert sum(sizes) == result.bundled_size and result.bundled_size % AES_BLOCK == 0
    assert all(s == part_size for s in sizes[:-1]) and 0 < sizes[-1] <= part_size
    assert list(result.parts) == sink.records
    assert sink.aborts == 0  # success: commit or abort is the caller's decision
    assert [(r.index, r.size, r.sha1) for r in result.parts] == [
        (i, len(p), sha1(p)) for i, p in enumerate(sink.parts)
    ]
    assert result.tar_size == tar_size(member)

    got, out, back = read_back(tmp_path, sink.parts, result.bundled_size)
    assert (got.name, got.size, got.mode, got.mtime) == ("disk.img", size, 0o640, 1_700_000_000)
    expected_map = extents if extents is not None else ((Extent(0, size),) if size else ())
    assert got.sparse_map == expected_map
    assert bytes(out.data) == image.read_bytes()
    assert out.finished == size
    assert back.tar_sha1 == result.tar_sha1
    assert back.tar_size == result.tar_size
    assert back.compression is compression
    assert amibundle_threads() == []


@st.composite
def layouts(draw: st.DrawFn) -> tuple[int, tuple[Extent, ...] | None]:
    if draw(st.booleans()):
        return draw(st.integers(0, 60_000)), None
    extents: list[Extent] = []
    offset = 0
    for _ in range(draw(st.integers(0, 8))):
        offset += draw(st.integers(0 if not extents else 1, 9000))
        length = draw(st.integers(1, 9000))
        extents.append(Extent(offset, length))
        offset += length
    size = offset + draw(st.integers(0, 9000))
    return size, tuple(extents)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    layout=layouts(),
    part_size=st.sampled_from([509, 4096, 7777, 1 << 20]),
    compression=st.sampled_from(list(Compression)),
    threads=st.sampled_from([1, 3]),
    level=st.one_of(st.none(), st.integers(1, 9)),
    seed=st.integers(0, 1000),
)
def test_any_layout_round_trips(
    layout: tuple[int, tuple[Extent, ...] | None],
    part_size: int,
    compression: Compression,
    threads: int,
    level: int | None,
    seed: int,
) -> None:
    size, extents = layout
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        image = make_image(folder, size, extents, seed)
        member = member_for(image, extents)
        result, sink = bundle(
            image, member, part_size=part_size, codec=Codec(compression, level, threads)
        )
        assert [len(p) for p in sink.parts[:-1]] == [part_size] * (len(sink.parts) - 1)
        got, out, back = read_back(folder, sink.parts, result.bundled_size)
        assert bytes(out.data) == image.read_bytes()
        assert got.size == size
        assert back.tar_sha1 == result.tar_sha1


@pytest.mark.parametrize("part_size", [16, 1000, 4099, 1 << 20])
def test_part_sizes(part_size: int, tmp_path: Path) -> None:
    image = make_image(tmp_path, 6000, None, seed=part_size)
    member = member_for(image, None)
    result, sink = bundle(image, member, part_size=part_size, codec=Codec(threads=2))
    expected_parts = -(-result.bundled_size // part_size)
    assert len(sink.parts) == len(result.parts) == expected_parts
    _, out, _ = read_back(tmp_path, sink.parts, result.bundled_size)
    assert bytes(out.data) == image.read_bytes()


def test_same_input_same_key_gives_the_same_bundle(tmp_path: Path) -> None:
    """With one thread the whole chain is deterministic (what reproducible
    bundle tests rely on); a different key changes every part."""
    image = make_image(tmp_path, 50_000, None, seed=1)
    member = member_for(image, None)
    codec = Codec(Compression.GZIP, 6, 1)
    first, sink1 = bundle(image, member, part_size=4096, codec=codec)
    second, sink2 = bundle(image, member, part_size=4096, codec=codec)
    assert first == second and sink1.parts == sink2.parts
    other_key = BundleKey(key=bytes(16), iv=bytes(16))
    fd = os.open(image, os.O_RDONLY)
    try:
        third = bundle_stream(fd, member, other_key, MemorySink(), part_size=4096, codec=codec)
    finally:
        os.close(fd)
    assert third.tar_sha1 == first.tar_sha1
    assert all(a.sha1 != b.sha1 for a, b in zip(first.parts, third.parts, strict=True))


# --- the tar stream -------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_tar_stream_length_and_digest(layout: str, tmp_path: Path) -> None:
    size, extents = LAYOUTS[layout]
    image = make_image(tmp_path, size, extents, seed=3)
    member = member_for(image, extents)
    fd = os.open(image, os.O_RDONLY)
    try:
        digest = hashlib.sha1()
        length = 0
        for piece in tar_stream(fd, member):
            digest.update(piece)  # pieces are reused buffers: use each at once
            length += len(piece)
    finally:
        os.close(fd)
    assert length == tar_size(member)
    assert length % 10240 == 0  # whole records, as GNU tar -b 20 writes
    result, _ = bundle(image, member, part_size=1 << 20, codec=Codec(threads=1))
    assert digest.hexdigest() == result.tar_sha1
    assert result.tar_size == length


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_tar_stream_is_read_by_pythons_tarfile(layout: str, tmp_path: Path) -> None:
    """An independent reader (old-GNU sparse members included) finds the one
    file with the image's bytes; pieces are copied, as buffers are reused."""
    size, extents = LAYOUTS[layout]
    image = make_image(tmp_path, size, extents, seed=4)
    fd = os.open(image, os.O_RDONLY)
    try:
        stream = b"".join(bytes(piece) for piece in tar_stream(fd, member_for(image, extents)))
    finally:
        os.close(fd)
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        (info,) = archive.getmembers()
        assert (info.name, info.size, info.mode, info.mtime) == (
            "disk.img", size, 0o640, 1_700_000_000
        )  # fmt: skip
        assert info.issparse() == (extents is not None)
        extracted = archive.extractfile(info)
        assert extracted is not None
        assert extracted.read() == image.read_bytes()


# --- progress -------------------------------------------------------------------------


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.value)
@pytest.mark.parametrize("layout", ["dense", "sparse", "all hole", "empty dense"])
def test_progress_adds_up(layout: str, compression: Compression, tmp_path: Path) -> None:
    size, extents = LAYOUTS[layout]
    image = make_image(tmp_path, size, extents, seed=5)
    member = member_for(image, extents)
    progress = RecordingProgress()
    result, sink = bundle(
        image, member, part_size=8192, codec=Codec(compression, None, 2), progress=progress
    )
    events = progress.events
    assert events[0] == ("start", Stage.READ, tar_size(member))
    assert events[-1] == ("finish", Stage.READ, None)
    assert {kind for kind, _, _ in events[1:-1]} <= {"advance"}
    assert progress.advanced(Stage.READ) == result.tar_size == tar_size(member)

    back_progress = RecordingProgress()
    got, _, _ = read_back(tmp_path, sink.parts, result.bundled_size, progress=back_progress)
    data_bytes = sum(extent.length for extent in got.sparse_map)
    events = back_progress.events
    assert events[0] == ("start", Stage.EXTRACT, data_bytes)
    assert events[-1] == ("finish", Stage.EXTRACT, None)
    assert back_progress.advanced(Stage.EXTRACT) == data_bytes


def test_unbundle_reports_progress_as_the_stage_it_is_given(tmp_path: Path) -> None:
    image = make_image(tmp_path, 40_000, None, seed=9)
    result, sink = bundle(image, member_for(image, None), part_size=4096, codec=Codec(threads=1))
    progress = RecordingProgress()
    read_back(tmp_path, sink.parts, result.bundled_size, progress=progress, stage=Stage.VERIFY)
    assert {stage for _, stage, _ in progress.events} == {Stage.VERIFY}
    assert progress.advanced(Stage.VERIFY) == 40_000


# --- errors propagate and stop the threads ------------------------------------------------


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.value)
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("failing", ["listener", "sink"])
def test_bundle_errors_propagate_and_threads_end(
    failing: str, threads: int, compression: Compression, tmp_path: Path
) -> None:
    # 3 MiB of incompressible data: several parts and several compressor blocks.
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(3 << 20))
    member = member_for(image, None)
    before = set(threading.enumerate())
    progress = RecordingProgress(fail_at_advance=2 if failing == "listener" else None)
    sink = MemorySink(fail_at_part=1 if failing == "sink" else None)
    expected = ListenerFailure if failing == "listener" else SinkFailure
    with pytest.raises(expected):
        bundle(
            image,
            member,
            part_size=256 * 1024,
            codec=Codec(compression, None, threads),
            sink=sink,
            progress=progress,
        )
    assert new_threads(before) == []
    assert amibundle_threads() == []
    assert sink.aborts >= 1  # a failed bundle never leaves parts for the caller to find
    # the listener hears how the stage ended
    kind, stage, error = progress.events[-1]
    assert (kind, stage) == ("finish", Stage.READ)
    assert isinstance(error, expected)


@pytest.mark.parametrize("failing", ["listener", "open_output", "write", "finish"])
def test_unbundle_errors_propagate_and_threads_end(failing: str, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(3 << 20))
    result, sink = bundle(image, member_for(image, None), part_size=1 << 20, codec=Codec())
    specs = write_parts(tmp_path, sink.parts)
    progress = RecordingProgress(fail_at_advance=2 if failing == "listener" else None)

    class FailingFinish(MemoryImage):
        def finish(self, size: int) -> None:
            raise SinkFailure("cannot set the size")

    def open_output(member: Member) -> MemoryImage:
        if failing == "open_output":
            raise SinkFailure("cannot create the image")
        if failing == "finish":
            return FailingFinish()
        return MemoryImage(fail_on_write=failing == "write")

    before = set(threading.enumerate())
    reader = PartReader(specs, result.bundled_size)
    expected = ListenerFailure if failing == "listener" else SinkFailure
    with pytest.raises(expected):
        unbundle_stream(reader, KEY, open_output, progress=progress)
    reader.close()
    assert amibundle_threads() == []
    assert new_threads(before) == []


# --- damage ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gzip_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, BundleStreamResult]:
    """A gzip bundle of 300 kB, its ciphertext as one byte string."""
    folder = tmp_path_factory.mktemp("gzip-bundle")
    image = folder / "disk.img"
    image.write_bytes(os.urandom(200_000) + b"text " * 20_000)
    result, sink = bundle(image, member_for(image, None), part_size=1 << 20, codec=Codec())
    return b"".join(sink.parts), result


def unbundle_bytes(
    folder: Path, ciphertext: bytes, *, key: BundleKey = KEY
) -> UnbundleStreamResult:
    """unbundle_stream of ``ciphertext`` as one part whose digest matches it:
    the part check passes, so only the stream's own checks can object."""
    _, _, result = read_back(folder, [ciphertext], None, key=key)
    return result


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_flipped_bit_in_gzip_ciphertext_is_an_integrity_error(
    position: float, bit: int, gzip_bundle: tuple[bytes, BundleStreamResult]
) -> None:
    """CBC garbles the block and flips a bit in the next; the gzip CRC or the
    deflate stream then objects. The flip lands in the random part of the
    image's data: a flip in the tar header's kilobyte is a TarFormatError,
    and one in the well-compressed tail may shift the tar framing (also a
    TarFormatError) before gzip reaches its CRC."""
    ciphertext, _ = gzip_bundle
    index = 1024 + int(position * (len(ciphertext) - 4096))
    damaged = bytearray(ciphertext)
    damaged[index] ^= 1 << bit
    with tempfile.TemporaryDirectory() as folder, pytest.raises(IntegrityError):
        unbundle_bytes(Path(folder), bytes(damaged))
    assert amibundle_threads() == []


TRUNCATIONS: dict[str, Callable[[int], int]] = {
    "last byte": lambda n: n - 1,
    "15 bytes": lambda n: n - 15,
    "last block": lambda n: n - AES_BLOCK,
    "two blocks": lambda n: n - 2 * AES_BLOCK,
    "1000 bytes": lambda n: n - 1000,
    "half": lambda n: n // 2,
    "only the first block": lambda n: AES_BLOCK,
}


@pytest.mark.parametrize("cut", sorted(TRUNCATIONS))
def test_truncated_ciphertext_is_an_integrity_error(
    cut: str, gzip_bundle: tuple[bytes, BundleStreamResult], tmp_path: Path
) -> None:
    ciphertext, _ = gzip_bundle
    keep = TRUNCATIONS[cut](len(ciphertext))
    with pytest.raises(IntegrityError):
        unbundle_bytes(tmp_path, ciphertext[:keep])
    assert amibundle_threads() == []


def test_the_wrong_key_is_an_integrity_error(
    gzip_bundle: tuple[bytes, BundleStreamResult], tmp_path: Path
) -> None:
    ciphertext, _ = gzip_bundle
    with pytest.raises(IntegrityError, match=r"wrong key|padding"):
        unbundle_bytes(tmp_path, ciphertext, key=BundleKey(key=bytes(16), iv=bytes(16)))


def test_empty_ciphertext_is_an_integrity_error() -> None:
    reader = PartReader([], None)  # no parts at all: nothing to decrypt
    with pytest.raises(IntegrityError):
        unbundle_stream(reader, KEY, lambda member: MemoryImage())


def encrypted(plaintext: bytes) -> bytes:
    out = bytearray()
    encryptor = CbcEncryptor(KEY, out.extend)
    encryptor.write(plaintext)
    encryptor.close()
    return bytes(out)


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


def compressed_tar(tmp_path: Path, compression: Compression) -> bytes:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(150_000) + bytes(100_000))
    fd = os.open(image, os.O_RDONLY)
    sink = Collect()
    try:
        writer = open_compressor(compression, None, 2, sink)
        for piece in tar_stream(fd, member_for(image, None)):
            writer.write(piece)
        writer.close()
    finally:
        os.close(fd)
    return bytes(sink.data)



@pytest.mark.parametrize(
    "compression",
    [
        pytest.param(Compression.GZIP, id="gzip"),
        pytest.param(Compression.ZSTD, id="zstd"),
    ],
)
@pytest.mark.parametrize("keep", [0.5, 0.99, -1])
def test_a_truncated_compressed_stream_is_an_integrity_error(
    keep: float, compression: Compression, tmp_path: Path
) -> None:
    """The padding is valid here: the compressed stream itself is cut short
    (a broken bundler, not a lost part), which only the decompressor can see."""
    stream = compressed_tar(tmp_path, compression)
    cut = len(stream) - 1 if keep == -1 else int(len(stream) * keep)
    try:
        unbundle_bytes(tmp_path, encrypted(stream[:cut]))
    except IntegrityError as err:
        assert "compressed stream" in str(err)
    except Exception as err:  # the assertion names what came instead
        raise AssertionError(f"{type(err).__name__}: {err}") from err
    else:
        raise AssertionError("a truncated stream was accepted")


def test_damaged_zstd_is_caught_by_the_stream_or_the_digest(tmp_path: Path) -> None:
    """zstd frames carry no checksum here, so the stream may decode damaged
    data; the tar digest then differs from the bundle's, which every caller
    compares with the manifest; or the garbled bytes break the tar framing.
    Whichever it is, the damage cannot go unnoticed."""
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(100_000))
    result, sink = bundle(
        image, member_for(image, None), part_size=1 << 20, codec=Codec(Compression.ZSTD)
    )
    ciphertext = b"".join(sink.parts)
    for index in (2000, len(ciphertext) // 2, len(ciphertext) - 40):
        damaged = bytearray(ciphertext)
        damaged[index] ^= 0x10
        try:
            back = unbundle_bytes(tmp_path, bytes(damaged))
        except (IntegrityError, TarFormatError):
            continue
        assert back.tar_sha1 != result.tar_sha1


# --- read_all_parts ---------------------------------------------------------------------


def test_read_all_parts_checks_every_part(tmp_path: Path) -> None:
    parts = [os.urandom(1000), os.urandom(1000), os.urandom(10)]
    specs = write_parts(tmp_path, parts)
    reader = PartReader(specs, 2010)
    read_all_parts(reader)
    assert (reader.checked, reader.total) == (3, 2010)


@pytest.mark.parametrize("victim", [0, 1, 2])
def test_read_all_parts_names_a_damaged_part(victim: int, tmp_path: Path) -> None:
    parts = [os.urandom(3 << 20), os.urandom(2 << 20), os.urandom(10)]
    specs = write_parts(tmp_path, parts)
    damaged = bytearray(parts[victim])
    damaged[-1] ^= 1
    specs[victim].path.write_bytes(damaged)
    reader = PartReader(specs, None)
    with pytest.raises(IntegrityError, match=rf"part disk\.img\.part\.{victim} is damaged"):
        read_all_parts(reader)
    assert reader.checked == victim


def test_read_all_parts_of_nothing(tmp_path: Path) -> None:
    reader = PartReader([], 0)
    read_all_parts(reader)
    assert reader.checked == 0
    with pytest.raises(IntegrityError, match="bundled_size 5"):
        read_all_parts(PartReader([], 5))


def test_bundle_parts_read_by_read_all_parts(tmp_path: Path) -> None:
    """What bundle_stream reports of its parts is what read_all_parts checks."""
    image = make_image(tmp_path, 120_000, None, seed=11)
    result, sink = bundle(image, member_for(image, None), part_size=7000, codec=Codec())
    folder = tmp_path / "parts"
    folder.mkdir()
    specs = []
    for record, data in zip(result.parts, sink.parts, strict=True):
        path = folder / f"part.{record.index}"
        path.write_bytes(data)
        specs.append(PartSpec(path, record.sha1))
    reader = PartReader(specs, result.bundled_size)
    read_all_parts(reader)
    assert reader.checked == len(result.parts)
    assert reader.total == result.bundled_size


# --- the manifest's size ------------------------------------------------------------------


def encrypted_part(folder: Path, plaintext: bytes) -> PartReader:
    blob = encrypted(plaintext)
    path = folder / "part.0"
    path.write_bytes(blob)
    return PartReader([PartSpec(path, sha1(blob))], len(blob))


def gzip_of(data: bytes) -> bytes:
    sink = Collect()
    writer = open_compressor(Compression.GZIP, 1, 2, sink)
    writer.write(data)
    writer.close()
    return bytes(sink.data)


def tar_of(image: Path, member: MemberInfo) -> bytes:
    fd = os.open(image, os.O_RDONLY)
    try:
        return b"".join(bytes(piece) for piece in tar_stream(fd, member))
    finally:
        os.close(fd)


def test_expected_size_that_matches(tmp_path: Path) -> None:
    image = make_image(tmp_path, 70_000, None, seed=2)
    member = member_for(image, None)
    reader = encrypted_part(tmp_path, gzip_of(tar_of(image, member)))
    out = MemoryImage()
    result = unbundle_stream(reader, KEY, lambda m: out, expected_size=70_000)
    assert result.member.size == 70_000 and bytes(out.data) == image.read_bytes()


def test_expected_size_that_differs_is_refused_before_writing(tmp_path: Path) -> None:
    image = make_image(tmp_path, 70_000, None, seed=2)
    reader = encrypted_part(tmp_path, gzip_of(tar_of(image, member_for(image, None))))
    opened: list[Member] = []

    def open_output(member: Member) -> MemoryImage:
        opened.append(member)
        return MemoryImage()

    with pytest.raises(IntegrityError, match="70000 bytes but the manifest says 69999"):
        unbundle_stream(reader, KEY, open_output, expected_size=69_999)
    assert opened == []
    assert amibundle_threads() == []


def test_a_stream_longer_than_its_image_allows_is_stopped(tmp_path: Path) -> None:
    """A decompression bomb: 40 MiB of zeros after the archive compress to
    almost nothing. Without the manifest's size they are read as harmless
    trailing zeros; with it, the stream is cut off at the archive's end."""
    image = make_image(tmp_path, 5000, None, seed=4)
    member = member_for(image, None)
    bomb = gzip_of(tar_of(image, member) + bytes(40 << 20))
    assert len(bomb) < 200_000
    result = unbundle_stream(encrypted_part(tmp_path, bomb), KEY, lambda m: MemoryImage())
    assert result.tar_size == tar_size(member) + (40 << 20)
    with pytest.raises(IntegrityError, match=r"goes on past the .* bytes its image size allows"):
        unbundle_stream(
            encrypted_part(tmp_path, bomb), KEY, lambda m: MemoryImage(), expected_size=5000
        )
    assert amibundle_threads() == []
