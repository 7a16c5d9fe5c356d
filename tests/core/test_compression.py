"""amibundle.compression: telling gzip from zstd, checking levels, and the
multi-threaded compressors that must still write ONE gzip member (what EC2
and every gunzip read) or one zstd frame; read back by its decompressors,
which must object to damaged input. Outputs are checked with Python's own
zlib and the zstandard library, independent of the code under test."""

from __future__ import annotations

import io
import os
import random
import threading
import time
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib
from zlib_ng import zlib_ng

from amibundle.compression import (
    DECOMPRESSION_ERRORS,
    DEFAULT_LEVELS,
    GZIP_MAGIC,
    LEVEL_RANGES,
    ZSTD_MAGIC,
    Compression,
    check_level,
    default_threads,
    detect,
    open_compressor,
    open_decompressor,
)
from amibundle.errors import IntegrityError, UsageError
from tests.support.errors import cli_text, one_line


class Collect:
    """A RawSink that keeps what it is given and counts the calls."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def write(self, data: bytes | memoryview) -> int:
        self.data += data
        self.writes += 1
        return len(data)

    def flush(self) -> None:
        pass


def compress(kind: Compression, level: int | None, threads: int, data: bytes, chunk: int) -> bytes:
    sink = Collect()
    writer = open_compressor(kind, level, threads, sink)
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])
    writer.close()
    return bytes(sink.data)


def one_gzip_member(blob: bytes) -> bytes:
    """The content of ``blob``, checked to be exactly one gzip member."""
    decoder = zlib.decompressobj(wbits=31)  # gzip framing; stops after one member
    content = decoder.decompress(blob) + decoder.flush()
    assert decoder.eof, "the gzip member is not finished"
    assert decoder.unused_data == b"", "more than one gzip member (or trailing bytes)"
    return content


def one_zstd_frame(blob: bytes) -> bytes:
    decoder = zstandard.ZstdDecompressor().decompressobj()  # stops after one frame
    content = decoder.decompress(blob)
    assert decoder.eof, "the zstd frame is not finished"
    assert decoder.unused_data == b"", "more than one zstd frame (or trailing bytes)"
    return content


def sample(size: int, seed: int = 0) -> bytes:
    """``size`` bytes, half (seeded) random, half repetitive: both kinds of
    deflate block appear. The same for the same arguments."""
    noise = random.Random(seed).randbytes(size // 2)
    text = (b"instance-store bundle %d\n" % seed * (size // 20 + 1))[: size - len(noise)]
    return noise + text


# --- detect -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (GZIP_MAGIC + b"\x08\x00", Compression.GZIP),
        (b"\x1f\x8b", Compression.GZIP),
        (ZSTD_MAGIC, Compression.ZSTD),
        (b"\x28\xb5\x2f\xfd\x04\x00", Compression.ZSTD),
    ],
)
def test_detect_by_magic(head: bytes, kind: Compression) -> None:
    assert detect(head) is kind


@pytest.mark.parametrize(
    "head",
    [b"", b"\x1f", b"\x8b\x1f", b"\x28\xb5\x2f", b"BZh9", b"\xfd7zXZ", b"ustar", bytes(4)],
)
def test_detect_refuses_anything_else(head: bytes) -> None:
    with pytest.raises(IntegrityError, match="neither gzip nor zstd") as caught:
        detect(head)
    one_line(caught)


def test_detect_reads_what_the_compressors_write() -> None:
    for kind in Compression:
        assert detect(compress(kind, None, 1, b"x" * 100, 100)[:4]) is kind


# --- levels ------------------------------------------------------------------------------


def test_default_levels() -> None:
    assert check_level(Compression.GZIP, None) == DEFAULT_LEVELS[Compression.GZIP] == 2
    assert check_level(Compression.ZSTD, None) == DEFAULT_LEVELS[Compression.ZSTD] == 3


@pytest.mark.parametrize(
    ("kind", "low", "high"), [(Compression.GZIP, 1, 9), (Compression.ZSTD, 1, 22)]
)
def test_every_level_in_range_is_taken(kind: Compression, low: int, high: int) -> None:
    assert list(LEVEL_RANGES[kind]) == list(range(low, high + 1))
    for level in range(low, high + 1):
        assert check_level(kind, level) == level


@pytest.mark.parametrize(
    ("kind", "level", "words"),
    [
        (Compression.GZIP, 0, "for gzip must be 1 to 9, not 0"),
        (Compression.GZIP, 10, "for gzip must be 1 to 9, not 10"),
        (Compression.GZIP, -1, "for gzip must be 1 to 9, not -1"),
        (Compression.GZIP, 22, "for gzip must be 1 to 9, not 22"),
        (Compression.ZSTD, 0, "for zstd must be 1 to 22, not 0"),
        (Compression.ZSTD, 23, "for zstd must be 1 to 22, not 23"),
    ],
)
def test_levels_out_of_range_are_usage_errors(kind: Compression, level: int, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_level(kind, level)
    assert caught.value.param == "level"
    assert one_line(caught) == f"level= {words}"
    assert cli_text(caught).startswith(f"--compress-level {words}")


# --- compressors ----------------------------------------------------------------------------

DATA = sample(3 << 20)  # three 1 MiB blocks and a bit: several compression jobs


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("level", range(1, 10))
def test_gzip_levels_write_one_member(level: int, threads: int) -> None:
    blob = compress(Compression.GZIP, level, threads, DATA, 300_000)
    assert blob[:2] == GZIP_MAGIC
    assert one_gzip_member(blob) == DATA


@pytest.mark.parametrize("level", range(1, 10))
def test_gzip_engine_by_level(level: int) -> None:
    """ISA-L for speed at 1-3, zlib-ng for ratio at 4-9 (see the module docs).
    A block is deflated raw and flushed to a byte boundary (pigz-style), so
    the member's body starts with exactly what the chosen library makes of
    the first block, and not with what another library makes."""
    block = sample(200_000, seed=level)
    blob = compress(Compression.GZIP, level, 1, block, len(block))

    def first_block(engine: ModuleType) -> bytes:
        deflater = engine.compressobj(level, engine.DEFLATED, -15)
        return bytes(deflater.compress(block) + deflater.flush(engine.Z_SYNC_FLUSH))

    # ISA-L has no levels above 3; the stdlib's zlib stands for "another library" there.
    chosen, other = (isal_zlib, zlib_ng) if level <= 3 else (zlib_ng, zlib)
    expected, not_expected = first_block(chosen), first_block(other)
    assert expected != not_expected  # else this test could not tell them apart
    body = blob[10:]  # after the 10-byte member header
    assert body.startswith(expected)
    assert one_gzip_member(blob) == block


def test_higher_gzip_levels_compress_better() -> None:
    text = b"".join(b"line %d of a root file system\n" % (i % 997) for i in range(100_000))
    fast = compress(Compression.GZIP, 1, 2, text, 1 << 16)
    small = compress(Compression.GZIP, 9, 2, text, 1 << 16)
    assert len(small) < len(fast)
    assert one_gzip_member(fast) == one_gzip_member(small) == text


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("level", [1, 3, 12])
def test_zstd_writes_one_frame(level: int, threads: int) -> None:
    blob = compress(Compression.ZSTD, level, threads, DATA, 300_000)
    assert blob[:4] == ZSTD_MAGIC
    assert one_zstd_frame(blob) == DATA


@pytest.mark.parametrize("kind", list(Compression), ids=lambda c: c.value)
def test_empty_input(kind: Compression) -> None:
    blob = compress(kind, None, 2, b"", 1)
    assert blob  # a header and trailer even for nothing
    content = one_gzip_member(blob) if kind is Compression.GZIP else one_zstd_frame(blob)
    assert content == b""
    reader = open_decompressor(kind, io.BytesIO(blob))
    assert reader.read() == b""
    reader.close()


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(list(Compression)),
    level=st.one_of(st.none(), st.integers(1, 9)),
    threads=st.integers(1, 4),
    size=st.one_of(st.integers(0, 3000), st.integers(1 << 20, (1 << 20) + 5000)),
    writes=st.integers(1, 300),
    seed=st.integers(0, 100),
)
def test_compressors_round_trip(
    kind: Compression, level: int | None, threads: int, size: int, writes: int, seed: int
) -> None:
    data = sample(size, seed)
    chunk = max(1, -(-size // writes))  # the input in about ``writes`` writes of any size
    blob = compress(kind, level, threads, data, chunk)
    content = one_gzip_member(blob) if kind is Compression.GZIP else one_zstd_frame(blob)
    assert content == data
    reader = open_decompressor(kind, io.BytesIO(blob))
    try:
        assert reader.read() == data
    finally:
        reader.close()


@pytest.mark.parametrize("threads", [0, -1])
@pytest.mark.parametrize("kind", list(Compression), ids=lambda c: c.value)
def test_threads_must_be_at_least_one(kind: Compression, threads: int) -> None:
    sink = Collect()
    with pytest.raises(UsageError) as caught:
        open_compressor(kind, None, threads, sink)
    assert caught.value.param == "threads"
    assert one_line(caught) == f"threads= must be at least 1, not {threads}"
    assert cli_text(caught).startswith("--threads must be at least 1")
    assert sink.writes == 0


def test_a_bad_level_is_refused_before_anything_is_written() -> None:
    sink = Collect()
    with pytest.raises(UsageError, match="level="):
        open_compressor(Compression.GZIP, 10, 2, sink)
    assert sink.writes == 0


def test_default_threads_is_the_usable_cpu_count() -> None:
    assert default_threads() == len(os.sched_getaffinity(0)) >= 1


# --- decompressors -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=list(Compression), ids=lambda c: c.value)
def compressed(request: pytest.FixtureRequest) -> tuple[Compression, bytes, bytes]:
    kind: Compression = request.param
    data = sample(600_000, seed=3)
    return kind, data, compress(kind, None, 2, data, 65536)


def read_all(kind: Compression, blob: bytes, size: int = 70_000) -> bytes:
    reader = open_decompressor(kind, io.BytesIO(blob))
    try:
        out = bytearray()
        while chunk := reader.read(size):
            out += chunk
        return bytes(out)
    finally:
        reader.close()


def test_decompressor_reads_in_any_sizes(compressed: tuple[Compression, bytes, bytes]) -> None:
    kind, data, blob = compressed
    for size in (777, 4096, 1 << 20):
        assert read_all(kind, blob, size) == data


def test_decompressor_reads_gzip_made_by_python() -> None:
    """Bundles from other tools (the classic one piped through gzip) read back."""
    import gzip

    data = sample(200_000, seed=4)
    assert read_all(Compression.GZIP, gzip.compress(data, compresslevel=9)) == data


def test_decompressor_reads_zstd_made_by_the_library_alone() -> None:
    data = sample(200_000, seed=5)
    blob = zstandard.ZstdCompressor(level=5, write_checksum=True).compress(data)
    assert read_all(Compression.ZSTD, blob) == data


def flip(blob: bytes, index: int) -> bytes:
    damaged = bytearray(blob)
    damaged[index] ^= 0x04
    return bytes(damaged)


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated to half": lambda b: b[: len(b) // 2],
    "last byte cut": lambda b: b[:-1],
    "last 8 bytes cut": lambda b: b[:-8],
    "only the header": lambda b: b[:12],
    "byte flipped in the middle": lambda b: flip(b, len(b) // 2),
    "byte flipped at the end": lambda b: flip(b, len(b) - 1),
    "garbage after the magic": lambda b: b[:4] + bytes(range(256)) * 4,
}

def damage_cases() -> list[Any]:
    return [
        pytest.param(kind, name, id=f"{kind.value}-{name}")
        for kind in Compression
        for name in sorted(DAMAGE)
    ]


@pytest.mark.parametrize(("kind", "damage"), damage_cases())
def test_damaged_input_raises_a_decompression_error(kind: Compression, damage: str) -> None:
    data = sample(600_000, seed=3)
    blob = compress(kind, None, 2, data, 65536)
    damaged = DAMAGE[damage](blob)
    with pytest.raises(DECOMPRESSION_ERRORS):
        read_all(kind, damaged)


def test_decompression_errors_cover_what_each_library_raises() -> None:
    """DECOMPRESSION_ERRORS is what the pipeline turns into IntegrityError:
    it must hold the libraries' own error types."""
    import gzip

    with pytest.raises(DECOMPRESSION_ERRORS):
        read_all(Compression.GZIP, b"\x1f\x8b" + bytes(30))
    with pytest.raises(DECOMPRESSION_ERRORS):
        read_all(Compression.ZSTD, ZSTD_MAGIC + b"\xff" * 40)
    assert issubclass(gzip.BadGzipFile, DECOMPRESSION_ERRORS)
    assert zstandard.ZstdError in DECOMPRESSION_ERRORS


# --- stopping ------------------------------------------------------------------------------


def amibundle_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("amibundle-")]


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("kind", list(Compression), ids=lambda c: c.value)
def test_abort_stops_at_once_and_writes_nothing_more(kind: Compression, threads: int) -> None:
    sink = Collect()
    writer = open_compressor(kind, None, threads, sink)
    writer.write(DATA)
    writer.abort()
    assert amibundle_threads() == []
    written = bytes(sink.data)
    time.sleep(0.1)  # a thread still running would write more by now
    assert bytes(sink.data) == written
    writer.abort()  # safe to repeat


class FailingSink(Collect):
    def write(self, data: bytes | memoryview) -> int:
        if len(self.data) + len(data) > 10_000:
            raise OSError(28, "No space left on device")
        return super().write(data)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("kind", list(Compression), ids=lambda c: c.value)
def test_a_failing_sink_surfaces_and_stops_the_threads(kind: Compression, threads: int) -> None:
    writer = open_compressor(kind, 1, threads, FailingSink())
    with pytest.raises(OSError, match="No space left"):
        for start in range(0, len(DATA), 1 << 18):
            writer.write(DATA[start : start + (1 << 18)])
        writer.close()
    writer.abort()
    deadline = time.monotonic() + 2
    while amibundle_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert amibundle_threads() == []
