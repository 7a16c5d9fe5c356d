"""The fuzz targets: each takes the fuzzer's bytes, feeds them to one hostile-
input reader, and checks the properties every input must keep.

* ``manifest``: :func:`amibundle.format.manifest_reader.parse` on the bytes.
* ``tar``: :class:`amibundle.format.tar_reader.SingleMemberReader` (read_header,
  iter_batches, finish) on the bytes after a control byte that picks the read
  pattern (chunk size, short reads, batch size).
* ``unbundle``: :func:`amibundle.pipeline.unbundle_stream` on a forged bundle
  built in memory from the bytes: a control byte picks the compression and a
  decompression bomb appended to the tar stream (up to 64 MiB of zeros or of
  non-zero bytes, costing 64 KiB at most), a second byte the manifest's size
  (the member's own, off by a little, or none) and the part boundaries; the
  rest is the tar stream, encrypted with AES-128-CBC.

Properties: nothing escapes but :class:`AmibundleError` subclasses; every
message is one line of at most :data:`MAX_MESSAGE` characters; the tar reader
hands out pieces inside the member, ascending, covering exactly its sparse
map; unbundling never writes more than the declared size, nor outside it,
and stops inflating a bomb within :data:`READ_AHEAD` bytes of the archive
the size allows. Memory and time per input are bounded by the fuzzer's
``-rss_limit_mb`` and ``-timeout`` (see :mod:`tests.fuzz.run`) and, when the
corpus is replayed, by the test.

Product bugs already reported are listed in :data:`KNOWN_BUGS`: the fuzzers
skip over them (so they keep looking for new ones) unless
``AMIBUNDLE_FUZZ_STRICT=1``; the saved corpus is always replayed strictly,
and its ``regression-*`` files reproduce bugs found (and fixed) this way.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from unittest import mock

from amibundle import pipeline
from amibundle.compression import open_decompressor
from amibundle.crypto import BundleKey
from amibundle.errors import AmibundleError
from amibundle.format.manifest_reader import parse
from amibundle.format.names import plain_name_problem
from amibundle.format.tar import Member
from amibundle.format.tar_reader import SingleMemberReader
from tests.support.hostile import MIB, MemoryParts, encrypt, gzip_stream, zstd_stream

__all__ = [
    "KNOWN_BUGS",
    "MAX_MESSAGE",
    "READ_AHEAD",
    "TARGETS",
    "PropertyViolation",
    "fuzz_manifest",
    "fuzz_tar",
    "fuzz_unbundle",
    "strict_mode",
]

MAX_MESSAGE = 1000  # characters of one error message (the "short line")
# Bytes the unbundle stages may inflate past the archive the size allows
# before they stop: queues of 1 MiB chunks between the threads.
READ_AHEAD = 8 * MIB
KEY = BundleKey(bytes(range(16)), bytes(range(16, 32)))

# Reported product bugs: (target, pattern of the error message). A message
# breaking the length rule that matches one of these is tolerated unless
# strict, so a long run keeps searching past a bug already known. None is
# open now; the mechanism stays for the next one a long run finds.
KNOWN_BUGS: tuple[tuple[str, re.Pattern[str]], ...] = ()


class PropertyViolation(AssertionError):
    """An input broke a property (the fuzzer reports it as a crash)."""


_strict = [os.environ.get("AMIBUNDLE_FUZZ_STRICT") == "1"]


@contextlib.contextmanager
def strict_mode(strict: bool = True) -> Iterator[None]:
    """Known bugs count as failures inside this block."""
    before = _strict[0]
    _strict[0] = strict
    try:
        yield
    finally:
        _strict[0] = before


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise PropertyViolation(what)


def check_message(error: AmibundleError, target: str) -> None:
    """One line, at most MAX_MESSAGE characters (hint included)."""
    for text in (str(error), error.hint or ""):
        short = len(text) <= MAX_MESSAGE and "\n" not in text and "\r" not in text
        if short:
            continue
        known = any(t == target and p.match(text) for t, p in KNOWN_BUGS)
        if known and not _strict[0]:
            continue
        raise PropertyViolation(
            f"{type(error).__name__} message of {len(text)} characters"
            f" ({text.count(chr(10))} newlines): {text[:300]!r}"
        )


def _guarded(target: str, run: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def one_input(data: bytes) -> None:
        try:
            run(data)
        except AmibundleError as error:
            check_message(error, target)

    one_input.__name__ = f"fuzz_{target}"
    return one_input


# --------------------------------------------------------------------------- manifest


def _manifest(data: bytes) -> None:
    parsed = parse(data)
    m = parsed.manifest
    _check(parsed.raw == data, "raw bytes are not the input")
    _check(plain_name_problem("name", m.name) is None, f"image name {m.name[:80]!r} accepted")
    for part in m.parts:
        problem = plain_name_problem("part", part.filename)
        _check(problem is None, f"part name {part.filename[:80]!r} accepted")
    _check([p.index for p in m.parts] == list(range(len(m.parts))), "part indices are not 0..n-1")
    # The signed bytes are cut from the file itself, never re-serialised.
    for section in (b"<machine_configuration>", b"<image>"):
        start = parsed.signed_data.find(section)
        if start >= 0:
            closing = b"</" + section[1:]
            cut = parsed.signed_data[start : parsed.signed_data.index(closing, start)]
            _check(cut in data, f"{section!r} section not cut from the input")


fuzz_manifest = _guarded("manifest", _manifest)


# --------------------------------------------------------------------------- tar


class _Trickle:
    """A stream that returns at most ``most`` bytes a read (short reads)."""

    def __init__(self, data: bytes, most: int) -> None:
        self._stream = io.BytesIO(data)
        self._most = most

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(self._most if size < 0 else min(size, self._most))


@dataclass(frozen=True)
class _TarControl:
    chunk_size: int
    trickle: int | None
    batch: int

    @classmethod
    def of(cls, byte: int) -> _TarControl:
        return cls(
            chunk_size=1 << (byte & 0x1F) % 21,  # 1 byte to 1 MiB
            trickle=(7, 1000)[byte >> 7] if byte & 0x20 else None,
            batch=(4096, 1, 3, 64)[(byte >> 6) & 3],
        )


def _check_member(member: Member) -> None:
    name = member.name
    _check(bool(name) and "/" not in name and "\0" not in name, f"member name {name[:80]!r}")
    _check(name not in (".", ".."), "member name is . or ..")
    _check(member.size >= 0, "negative size")
    end = 0
    for extent in member.sparse_map:
        _check(extent.length > 0, "an empty extent")
        _check(extent.offset >= end, "extents overlap or descend")
        end = extent.offset + extent.length
    _check(end <= member.size, "an extent beyond the file size")


def _tar(data: bytes) -> None:
    if not data:
        return
    control = _TarControl.of(data[0])
    body = data[1:]
    stream: Any = io.BytesIO(body) if control.trickle is None else _Trickle(body, control.trickle)
    reader = SingleMemberReader(stream, chunk_size=control.chunk_size)
    member = reader.read_header()
    _check_member(member)
    stored = sum(extent.length for extent in member.sparse_map)
    extents = iter(member.sparse_map)
    extent = next(extents, None)
    inside = 0  # bytes of the current extent handed out
    total = 0
    for batch in reader.iter_batches(control.batch):
        _check(0 < len(batch) <= control.batch, f"a batch of {len(batch)} pieces")
        for offset, piece in batch:
            _check(extent is not None, "data beyond the sparse map")
            assert extent is not None
            _check(offset == extent.offset + inside, "a piece out of place")
            _check(0 < len(piece) <= min(control.chunk_size, extent.length - inside), "piece size")
            inside += len(piece)
            total += len(piece)
            if inside == extent.length:
                extent, inside = next(extents, None), 0
    _check(total == stored and extent is None, "the pieces do not cover the sparse map")
    reader.finish()


fuzz_tar = _guarded("tar", _tar)


# --------------------------------------------------------------------------- unbundle

# Bomb sizes in MiB, appended after the tar stream inside the compression: 64 MiB
# is far beyond READ_AHEAD (a bomb not stopped is caught), and costs 64 KiB.
BOMBS = (0, 0, 0, 0, 0, 1, 16, 64)


@dataclass(frozen=True)
class UnbundleControl:
    """What the two control bytes choose (see the module docstring)."""

    compression: str  # gzip, zstd, gzip-split (two members), plain (no compression)
    fill: int  # the bomb's byte
    bomb_mib: int
    size_mode: str  # honest, off, none, small
    delta: int  # honest + delta (off) or the size itself (small)
    piece: int  # bytes per part boundary

    @classmethod
    def of(cls, first: int, second: int) -> UnbundleControl:
        return cls(
            compression=("gzip", "zstd", "gzip-split", "plain")[first & 3],
            fill=(0, 0x41)[(first >> 2) & 1],
            bomb_mib=BOMBS[(first >> 3) & 7],
            size_mode=("honest", "honest", "off", "none", "small")[(first >> 6) % 4 + (second & 1)],
            delta=(second >> 1) - 64,
            piece=1 << (4 + (second >> 4)),
        )


def _compress(control: UnbundleControl, tar: bytes) -> bytes:
    tail = {"tail_mib": control.bomb_mib, "fill": control.fill}
    if control.compression == "zstd":
        return zstd_stream(tar, **tail)
    if control.compression == "gzip-split":
        half = len(tar) // 2
        return gzip_stream(tar[:half]) + gzip_stream(tar[half:], **tail)
    if control.compression == "plain":
        return tar
    return gzip_stream(tar, **tail)


def _reference(tar: bytes) -> tuple[Member, int] | None:
    """The member and header length as an independent read sees them (None
    when the header is refused)."""
    reader = SingleMemberReader(io.BytesIO(tar))
    try:
        member = reader.read_header()
    except AmibundleError:
        return None
    return member, reader.bytes_read


class _CountingWriter:
    """The member's destination: checks every write against the declared size."""

    def __init__(self, member: Member, declared: int | None) -> None:
        self.member = member
        self.declared = member.size if declared is None else declared
        self.written = 0
        self.finished: int | None = None

    def write(self, offset: int, data: memoryview) -> None:
        _check(offset >= 0 and offset + len(data) <= self.declared, "a write beyond the size")
        self.written += len(data)
        _check(self.written <= self.declared, "more data written than the declared size")

    def finish(self, size: int) -> None:
        _check(size == self.declared, f"finished at {size}, not {self.declared}")
        self.finished = size


class _Counted:
    """Counts what the decompressor hands out."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.inflated = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.inflated += len(data)
        return data


def _archive_bound(header_bytes: int, member: Member) -> int:
    """The most an archive with this member holds: headers, data, padding,
    two zero blocks and zeros to the next 10 KiB record."""
    stored = sum(extent.length for extent in member.sparse_map)
    return header_bytes + stored + -stored % 512 + 1024 + 10240


def _expected_size(control: UnbundleControl, reference: tuple[Member, int] | None) -> int | None:
    member_size = reference[0].size if reference else 0
    if control.size_mode == "honest":
        return member_size
    if control.size_mode == "off":
        return max(0, member_size + control.delta) if control.delta else member_size + 1
    if control.size_mode == "small":
        return control.delta + 64
    return None


def _unbundle(data: bytes) -> None:
    if len(data) < 2:
        return
    control = UnbundleControl.of(data[0], data[1])
    tar = data[2:]
    reference = _reference(tar)
    expected = _expected_size(control, reference)
    if expected is None:
        # No size, no limit: the API's documented use for trusted streams.
        control = UnbundleControl(**{**control.__dict__, "bomb_mib": min(control.bomb_mib, 1)})
    parts = MemoryParts(encrypt(_compress(control, tar), KEY.key, KEY.iv), control.piece)
    writers: list[_CountingWriter] = []
    counted: list[_Counted] = []

    def open_output(member: Member) -> _CountingWriter:
        if expected is not None:
            _check(member.size == expected, "a member of another size was opened for writing")
        writers.append(_CountingWriter(member, expected))
        return writers[-1]

    def counting(kind: Any, source: BinaryIO) -> BinaryIO:
        counted.append(_Counted(open_decompressor(kind, source)))
        return counted[-1]  # type: ignore[return-value]

    # Without compression the bytes are whatever they are: the tar read is not
    # the tar given, so the checks that compare with it are left out.
    compared = control.compression != "plain"
    threads_before = set(threading.enumerate())
    try:
        with mock.patch.object(pipeline, "open_decompressor", counting):
            result = pipeline.unbundle_stream(parts, KEY, open_output, expected_size=expected)
    finally:
        if compared:
            _check_bomb_stopped(reference, expected, counted)
        running = [t.name for t in set(threading.enumerate()) - threads_before]
        _check(not running, f"threads still running: {running}")
    _check(len(writers) == 1 and writers[0].finished is not None, "the writer was not finished")
    if not compared:
        return
    if expected is not None and reference is not None:
        bound = _archive_bound(reference[1], reference[0])
        _check(
            result.tar_size <= bound, f"accepted {result.tar_size} bytes; the size allows {bound}"
        )
    stream_bytes = len(tar) + control.bomb_mib * MIB
    _check(result.tar_size == stream_bytes, "succeeded without reading the whole stream")
    if control.bomb_mib == 0:
        _check(result.tar_sha1 == hashlib.sha1(tar).hexdigest(), "wrong tar digest")


def _check_bomb_stopped(
    reference: tuple[Member, int] | None, expected: int | None, counted: list[_Counted]
) -> None:
    """Inflation stopped near the archive the declared size allows."""
    if reference is None or expected is None or not counted:
        return
    member, header_bytes = reference
    if member.size != expected:
        bound = header_bytes + READ_AHEAD  # refused at the header
    else:
        bound = _archive_bound(header_bytes, member) + READ_AHEAD
    inflated = counted[0].inflated
    _check(inflated <= bound, f"inflated {inflated} bytes; the size allows {bound}")


fuzz_unbundle = _guarded("unbundle", _unbundle)

TARGETS: dict[str, Callable[[bytes], None]] = {
    "manifest": fuzz_manifest,
    "tar": fuzz_tar,
    "unbundle": fuzz_unbundle,
}
