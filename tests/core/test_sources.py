"""Unit tests of amibundle.sources: recognising formats, the first pass's zero
runs, reading a stream in order, qemu-img's map and windows (property tests
against simple models)."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amibundle.cli.bundle_image import byte_size
from amibundle.errors import ImageSourceError
from amibundle.format.tar import Extent
from amibundle.sources.base import ImageFormat, SequentialReader, zero_scan
from amibundle.sources.detect import format_of, is_tar
from amibundle.sources.qemu import data_extents_of_map, windows
from amibundle.sparse import ZERO_GRANULE

G = ZERO_GRANULE


@pytest.mark.parametrize(
    ("head", "tail", "kind"),
    [
        (b"\x1f\x8b\x08\x00" + bytes(6), b"", ImageFormat.GZIP),
        (b"BZh91AY&SY" + bytes(4), b"", ImageFormat.BZIP2),
        (b"\xfd7zXZ\x00\x00\x04", b"", ImageFormat.XZ),
        (b"\x28\xb5\x2f\xfd\x20\x05", b"", ImageFormat.ZSTD),
        (b"QFI\xfb\x00\x00\x00\x03", b"", ImageFormat.QCOW2),
        (b"KDMV\x01\x00\x00\x00", b"", ImageFormat.VMDK),
        (b"# Disk DescriptorFile\nversion=1", b"", ImageFormat.VMDK),
        (b"vhdxfile", b"", ImageFormat.VHDX),
        (b"conectix" + bytes(8), b"", ImageFormat.VHD),  # dynamic: a footer copy first
        (bytes(16), b"conectix" + bytes(504), ImageFormat.VHD),  # fixed
        (bytes(16), b"\x00conectix" + bytes(503), ImageFormat.VHD),  # old fixed: 511 bytes
        (b"\xeb\x63\x90" + bytes(13), bytes(512), ImageFormat.RAW),  # an MBR boot sector
        (b"\x1f\x8b\x07", b"", ImageFormat.RAW),  # not deflate: no gzip
        (b"BZh0", b"", ImageFormat.RAW),
        (b"", b"", ImageFormat.RAW),
    ],
)
def test_formats_are_recognised_by_their_bytes(head: bytes, tail: bytes, kind: ImageFormat) -> None:
    assert format_of(head, tail) is kind


def test_tar_archives_are_recognised() -> None:
    header = bytearray(512)
    header[257:263] = b"ustar\x00"
    assert is_tar(bytes(header))
    header[257:263] = b"ustar "  # GNU's old magic
    assert is_tar(bytes(header))
    assert not is_tar(bytes(512)) and not is_tar(b"ustar")


# A layout: each granule is zero or not; the last one may be partial.
layouts = st.tuples(st.lists(st.booleans(), max_size=40), st.integers(0, G - 1))


def image_of(granules: list[bool], tail: int) -> bytes:
    pieces = [(b"\x01" + bytes(G - 2) + b"\x02") if data else bytes(G) for data in granules]
    image = b"".join(pieces)
    return image + (b"\x03" * tail if tail else b"")


def expected_extents(data: bytes) -> list[Extent]:
    extents: list[Extent] = []
    for start in range(0, len(data), G):
        if any(data[start : start + G]):
            if extents and extents[-1].offset + extents[-1].length == start:
                extents[-1] = Extent(
                    extents[-1].offset, extents[-1].length + len(data[start : start + G])
                )
            else:
                extents.append(Extent(start, len(data[start : start + G])))
    return extents


def no_errors() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


@settings(max_examples=80, deadline=None)
@given(layouts, st.integers(1, 4))
def test_the_first_pass_finds_the_zero_granules(layout: tuple[list[bool], int], step: int) -> None:
    data = image_of(*layout)
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=step * 1000)  # short reads
    seen: list[int] = []
    size, extents = zero_scan(
        stream, label="x", errors=no_errors, progress_step=seen.append, size_limit=None
    )
    assert (size, extents, sum(seen)) == (len(data), expected_extents(data), len(data))


@settings(max_examples=80, deadline=None)
@given(layouts)
def test_the_second_pass_hands_out_the_extents_and_checks_the_rest(
    layout: tuple[list[bool], int],
) -> None:
    data = image_of(*layout)
    extents = tuple(expected_extents(data))
    reader = SequentialReader(io.BytesIO(data), len(data), "x", no_errors)
    buffer = bytearray(3 * G + 7)
    pieces = [bytes(view) for view in reader.extents(extents, iter(lambda: buffer, None))]
    assert b"".join(pieces) == b"".join(data[e.offset : e.offset + e.length] for e in extents)


def test_the_second_pass_notices_a_changed_or_resized_stream() -> None:
    data = image_of([True, False, True], 0)
    extents = (Extent(0, G), Extent(2 * G, G))
    buffers = iter(lambda: bytearray(G), None)
    changed = data[:G] + b"\x07" + data[G + 1 :]
    cases = {
        changed: "changed while it was being read",
        data[:-1]: "ended after",
        data + b"\x00": "holds more than",
    }
    for stream, message in cases.items():
        reader = SequentialReader(io.BytesIO(stream), len(data), "the image", no_errors)
        with pytest.raises(ImageSourceError, match=message):
            list(reader.extents(extents, buffers))


def test_qemu_map_data_ranges_are_merged_and_zeros_left_out() -> None:
    entries = [
        {"start": 0, "length": 4096, "data": False, "zero": True},
        {"start": 4096, "length": 4096, "data": True, "zero": False},
        {"start": 8192, "length": 4096, "data": True, "zero": False, "depth": 1},
        {"start": 12288, "length": 4096, "data": True, "zero": True},  # allocated zeros
        {"start": 16384, "length": 0, "data": True, "zero": False},
        {"start": 16384, "length": 100, "data": True, "zero": False},
    ]
    assert data_extents_of_map(entries) == [Extent(4096, 8192), Extent(16384, 100)]


extent_lists = st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 3000)), max_size=20).map(
    lambda pairs: _disjoint(pairs)
)


def _disjoint(pairs: list[tuple[int, int]]) -> list[Extent]:
    extents, cursor = [], 0
    for gap, length in pairs:
        extents.append(Extent(cursor + gap, length))
        cursor += gap + length
    return extents


@settings(max_examples=150, deadline=None)
@given(extent_lists, st.integers(1, 4000))
def test_windows_cover_the_extents_in_order_within_the_limit(
    extents: list[Extent], limit: int
) -> None:
    groups = list(windows(extents, limit))
    flat = [extent for group in groups for extent in group]
    covered = [(e.offset + i) for e in flat for i in range(e.length)]
    assert covered == [(e.offset + i) for e in extents for i in range(e.length)]
    for group in groups:
        assert group and group[-1].offset + group[-1].length - group[0].offset <= limit


@pytest.mark.parametrize(
    ("text", "size"),
    [("8589934592", 8 << 30), ("8G", 8 << 30), ("512MiB", 512 << 20), ("64k", 64 << 10)],
)
def test_image_size_values(text: str, size: int) -> None:
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "8X", "1.5G", "G"])
def test_bad_image_size_values(text: str) -> None:
    with pytest.raises(Exception, match="expected a size in bytes"):
        byte_size(text)
