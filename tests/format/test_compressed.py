"""Property tests of amibundle.format.compressed: the size an xz index or zstd
frame headers record, against files made by Python's lzma and the zstandard
library (not by amibundle), and never a crash on anything else."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from amibundle.format.compressed import (
    xz_uncompressed_size,
    zstd_content_size,
    zstd_first_frame_size,
)

chunks = st.lists(st.binary(max_size=3000), min_size=1, max_size=4)


def reader(data: bytes):  # type: ignore[no-untyped-def]
    return lambda offset, length: data[offset : offset + length]


@settings(max_examples=60, deadline=None)
@given(chunks, st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_xz_streams_and_padding_add_up(parts: list[bytes], padding: list[int]) -> None:
    """Concatenated streams, stream padding between and after them: the
    indexes hold the total."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 0}]
    data = unpadded = b""
    for part, pad in zip(parts, padding, strict=False):
        stream = lzma.compress(part, format=lzma.FORMAT_XZ, filters=filters)
        data += stream + b"\0" * 4 * pad
        unpadded += stream
    assert xz_uncompressed_size(reader(data), len(data)) == sum(map(len, parts))
    assert lzma.decompress(unpadded) == b"".join(parts)  # what we sized is valid xz


def test_xz_blocks_of_the_xz_tool_add_up(tmp_path: Path) -> None:
    """Many blocks in one stream (what ``xz -T`` writes); Python's lzma writes one."""
    if shutil.which("xz") is None:
        pytest.skip("xz is not installed")
    payload = os.urandom(100_000) + bytes(300_000)
    source = tmp_path / "data"
    source.write_bytes(payload)
    subprocess.run(["xz", "-k", "-T2", "--block-size=65536", str(source)], check=True)
    data = (tmp_path / "data.xz").read_bytes()
    assert xz_uncompressed_size(reader(data), len(data)) == len(payload)


@settings(max_examples=60, deadline=None)
@given(chunks, st.booleans(), st.booleans(), st.integers(0, 2))
def test_zstd_frames_add_up_when_each_records_its_size(
    parts: list[bytes], checksum: bool, skippable: bool, level: int
) -> None:
    compressor = zstandard.ZstdCompressor(level=level + 1, write_checksum=checksum)
    frames = [compressor.compress(part) for part in parts]
    if skippable:
        frames.insert(1, (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"x" * 5)
    data = b"".join(frames)
    assert zstd_content_size(reader(data), len(data)) == sum(map(len, parts))
    assert zstd_first_frame_size(data) == len(parts[0])


def test_a_zstd_frame_without_its_size_makes_the_total_unknown() -> None:
    unknown = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 100)
    known = zstandard.ZstdCompressor().compress(b"y" * 50)
    for data in (unknown, known + unknown, unknown + known):
        assert zstd_content_size(reader(data), len(data)) is None
    assert zstd_first_frame_size(unknown) is None


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["xz", "zstd"]), st.integers(0, 30))
def test_damage_and_garbage_give_none_never_a_crash(junk: bytes, kind: str, cut: int) -> None:
    """Truncated files, junk after them and random bytes: None (the caller
    counts, and its decompressor reports the damage)."""
    payload = os.urandom(200) + junk
    if kind == "xz":
        data = lzma.compress(payload, format=lzma.FORMAT_XZ)
        size = xz_uncompressed_size
    else:
        data = zstandard.ZstdCompressor().compress(payload)
        size = zstd_content_size
    for variant in (data[: len(data) - 1 - cut], data + b"?" + junk):
        assert size(reader(variant), len(variant)) is None
    for function in (xz_uncompressed_size, zstd_content_size):
        assert function(reader(junk), len(junk)) is None
