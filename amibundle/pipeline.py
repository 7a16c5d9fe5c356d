"""The streaming engine: image -> bundle parts, and parts -> image.

Bundling, stage by stage (each stage hands buffers to the next; nothing
full-size is ever held or written)::

    data extents --tar framing--> T --SHA-1--> gzip (N threads) --AES-CBC--> parts (SHA-1 each)

The calling thread reads the image and hashes the tar stream; compression
runs on ``threads`` worker threads; ISA-L's writer thread encrypts and cuts
parts. Unbundling runs the same stages backwards, with part reading,
decryption and decompression in one background thread and tar parsing,
hashing and sparse writing in the calling thread.

These functions know streams, not files or manifests: ``amibundle.api``
wires them to those.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from amibundle import tarstream
from amibundle.compression import (
    DECOMPRESSION_ERRORS,
    Compression,
    default_threads,
    detect,
    open_compressor,
    open_decompressor,
)
from amibundle.crypto import BundleKey, CbcDecryptor, CbcEncryptor
from amibundle.errors import IntegrityError
from amibundle.parts import PartReader, PartRecord, PartSink, PartSplitter
from amibundle.progress import NullProgress, Progress, Stage
from amibundle.sparse import read_extents
from amibundle.tarstream import Extent, Member, MemberInfo, SingleMemberReader

__all__ = [
    "BundleStreamResult",
    "Codec",
    "UnbundleStreamResult",
    "MemberWriter",
    "bundle_stream",
    "read_all_parts",
    "tar_size",
    "tar_stream",
    "unbundle_stream",
]

_READ_BUFFER = 1 << 20


@dataclass(frozen=True)
class Codec:
    """How the tar stream is compressed."""

    compression: Compression = Compression.GZIP
    level: int | None = None  # None: the compression's default (compression.DEFAULT_LEVELS)
    threads: int = field(default_factory=default_threads)


@dataclass(frozen=True)
class BundleStreamResult:
    tar_sha1: str
    tar_size: int
    parts: tuple[PartRecord, ...]
    bundled_size: int


class _Encrypting:
    """The raw stream the compressor writes into: encrypts into the splitter."""

    def __init__(self, encryptor: CbcEncryptor) -> None:
        self._encryptor = encryptor

    def write(self, data: bytes | memoryview) -> int:
        self._encryptor.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def tar_stream(fd: int, member: MemberInfo) -> Iterator[bytes | memoryview]:
    """The whole tar archive T for one member, in pieces. Read buffers are
    reused: consumers must use each piece before asking for the next."""
    header = tarstream.encode_header(member)
    yield header
    if member.extents is not None:
        extents: tuple[Extent, ...] = member.extents
    else:
        extents = (Extent(0, member.size),) if member.size else ()
    yield from read_extents(fd, extents, itertools.repeat(bytearray(_READ_BUFFER)))
    stored = tarstream.stored_size(member)
    yield tarstream.padding(stored)
    written = len(header) + stored + len(tarstream.padding(stored))
    yield tarstream.end_of_archive(written)


def tar_size(member: MemberInfo) -> int:
    """The length of :func:`tar_stream` for ``member`` (for progress totals)."""
    body = len(tarstream.encode_header(member)) + tarstream.stored_size(member)
    body += len(tarstream.padding(tarstream.stored_size(member)))
    return body + len(tarstream.end_of_archive(body))


def bundle_stream(
    fd: int,
    member: MemberInfo,
    key: BundleKey,
    sink: PartSink,
    *,
    part_size: int,
    codec: Codec | None = None,
    progress: Progress | None = None,
) -> BundleStreamResult:
    """Streams the image open on ``fd`` into ``sink`` as encrypted parts.

    The sink is neither committed nor aborted here: the caller decides, once
    it also has the manifest.
    """
    codec = codec or Codec()
    progress = progress or NullProgress()
    splitter = PartSplitter(sink, part_size)
    encryptor = CbcEncryptor(key, splitter.take_ciphertext)
    compressor = open_compressor(
        codec.compression, codec.level, codec.threads, _Encrypting(encryptor)
    )
    tar_hash = hashlib.sha1()
    tar_bytes = 0
    progress.start(Stage.READ, tar_size(member))
    try:
        for piece in tar_stream(fd, member):
            tar_hash.update(piece)
            compressor.write(piece)
            tar_bytes += len(piece)
            progress.advance(Stage.READ, len(piece))
        compressor.close()  # flushes the last blocks and the gzip trailer
        encryptor.close()
        records = splitter.finish()
    except BaseException as err:
        _close_quietly(compressor)  # stops the compressor's threads
        progress.finish(Stage.READ, err)
        raise
    progress.finish(Stage.READ)
    return BundleStreamResult(tar_hash.hexdigest(), tar_bytes, tuple(records), splitter.total)


def _close_quietly(stream: BinaryIO) -> None:
    with contextlib.suppress(Exception):
        stream.close()


# --- unbundling --------------------------------------------------------------


class _Decrypting(io.RawIOBase):
    """Readable decrypted bytes of a readable ciphertext stream."""

    def __init__(self, source: PartReader, key: BundleKey) -> None:
        super().__init__()
        self._source = source
        self._ready: deque[bytes] = deque()
        self._offset = 0  # into self._ready[0]
        self._decryptor = CbcDecryptor(key, lambda view: self._ready.append(bytes(view)))
        self._buffer = bytearray(_READ_BUFFER)
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._ready:
            if self._eof:
                return 0
            n = self._source.readinto(memoryview(self._buffer))
            if n:
                self._decryptor.write(memoryview(self._buffer)[:n])
            else:
                self._eof = True
                self._decryptor.close()
        head = self._ready[0]
        n = min(len(buffer), len(head) - self._offset)
        buffer[:n] = head[self._offset : self._offset + n]
        self._offset += n
        if self._offset == len(head):
            self._ready.popleft()
            self._offset = 0
        return n


class _Hashing(io.RawIOBase):
    """Passes a stream through while hashing it (the tar stream's SHA-1)."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self.sha1 = hashlib.sha1()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            n = self._source.readinto(buffer)  # type: ignore[attr-defined]
        except DECOMPRESSION_ERRORS as err:
            if isinstance(err, IntegrityError):
                raise
            raise IntegrityError(
                f"the compressed stream inside the bundle is damaged ({err})"
            ) from None
        self.sha1.update(memoryview(buffer)[:n])
        self.size += n
        return int(n)


@dataclass(frozen=True)
class UnbundleStreamResult:
    member: Member
    tar_sha1: str
    tar_size: int
    compression: Compression


class MemberWriter(Protocol):
    """What unbundling writes the member's data into (a sparse file)."""

    def write(self, offset: int, data: memoryview) -> None: ...
    def finish(self, size: int) -> None: ...


def unbundle_stream(
    parts: PartReader,
    key: BundleKey,
    open_output: Callable[[Member], MemberWriter],
    *,
    progress: Progress | None = None,
    stage: Stage = Stage.EXTRACT,
) -> UnbundleStreamResult:
    """Decrypts, decompresses and un-tars ``parts``; ``open_output`` is called
    with the member's header and returns where its data goes. Part digests
    are checked by ``parts``; the caller compares ``tar_sha1`` with the
    manifest. Progress (bytes of image data, as ``stage``) is reported from
    the calling thread, so a listener may raise to stop the work."""
    progress = progress or NullProgress()
    decrypted = io.BufferedReader(_Decrypting(parts, key), _READ_BUFFER)
    compression = detect(decrypted.peek(4)[:4])
    decompressed = open_decompressor(compression, decrypted)
    hashing = _Hashing(decompressed)
    try:
        reader = SingleMemberReader(io.BufferedReader(hashing, _READ_BUFFER))
        member = reader.read_header()
        output = open_output(member)
        progress.start(stage, sum(extent.length for extent in member.sparse_map))
        for offset, data in reader.iter_data():
            output.write(offset, data)
            progress.advance(stage, len(data))
        reader.finish()
        output.finish(member.size)
        progress.finish(stage)
    except BaseException as err:
        progress.finish(stage, err)
        raise
    finally:
        _close_quietly(decompressed)
    return UnbundleStreamResult(member, hashing.sha1.hexdigest(), hashing.size, compression)


def read_all_parts(parts: PartReader) -> None:
    """Reads every part through ``parts`` (checking each), discarding the data."""
    buffer = memoryview(bytearray(_READ_BUFFER))
    while parts.readinto(buffer):
        pass
