"""Cutting the encrypted stream into parts, and reading parts back.

Writing: :class:`PartSplitter` cuts ciphertext into parts of ``part_size``
bytes, hashing each as it streams, and hands the bytes to a :class:`PartSink`.
The sink is the small interface the pipeline writes through: a folder
(:class:`amibundle.folder.DirectoryPartSink`) or an S3 stream. Part names depend on the
part *count* (spec §1, the digit rule), which is only known at the end, so a
sink receives the final names in :meth:`PartSink.commit`.

Reading: :class:`PartReader` concatenates the part files a manifest lists and
checks each one's size and SHA-1 as it is consumed.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from amibundle.errors import IntegrityError, StorageError
from amibundle.files import open_input

__all__ = [
    "PartReader",
    "PartRecord",
    "PartSink",
    "PartSource",
    "PartSplitter",
    "PartSpec",
    "PartWriter",
]


@dataclass(frozen=True)
class PartRecord:
    """One written part: its position, size and SHA-1 (hex)."""

    index: int
    size: int
    sha1: str


class PartWriter(Protocol):
    """What the stream engine writes parts through. Calls come in order:
    ``open_part(0)``, ``write``…, ``close_part``, ``open_part(1)``…; on a
    failure, ``abort``.

    The calls up to ``close_part`` come from the compressor's writer thread.
    ``abort`` may come from another thread while a ``write`` is in progress:
    it must make that write end promptly (return or raise), leave nothing
    behind, and be safe to call more than once."""

    def open_part(self, index: int) -> None: ...
    def write(self, data: memoryview) -> None: ...
    def close_part(self, record: PartRecord) -> None: ...
    def abort(self) -> None: ...


class PartSink(PartWriter, Protocol):
    """A :class:`PartWriter` whose parts get their names at the end, in
    ``commit``. (The S3 sink names its parts up front and is only a
    :class:`PartWriter` to the engine.)"""

    def commit(self, filenames: Sequence[str]) -> list[Path]: ...


class PartSplitter:
    """A writable raw stream (the compressor writes into it) that encrypts
    and cuts the ciphertext into parts.

    ``encrypt`` is the encryption stage: it calls :meth:`take_ciphertext` with
    each piece of ciphertext it produces.
    """

    def __init__(self, sink: PartWriter, part_size: int) -> None:
        if part_size < 1:
            raise ValueError("part size must be positive")
        self._sink = sink
        self._part_size = part_size
        self._index = -1
        self._filled = part_size  # forces a new part on the first byte
        self._hash = hashlib.sha1()
        self.records: list[PartRecord] = []
        self.total = 0

    def take_ciphertext(self, data: memoryview) -> None:
        while data:
            if self._filled == self._part_size:
                self._close_current()
                self._index += 1
                self._filled = 0
                self._hash = hashlib.sha1()
                self._sink.open_part(self._index)
            room = self._part_size - self._filled
            piece, data = data[:room], data[room:]
            self._hash.update(piece)
            self._sink.write(piece)
            self._filled += len(piece)
            self.total += len(piece)

    def _close_current(self) -> None:
        if self._index >= 0:
            record = PartRecord(self._index, self._filled, self._hash.hexdigest())
            self.records.append(record)
            self._sink.close_part(record)

    def finish(self) -> list[PartRecord]:
        """Closes the last part; returns every part's record."""
        self._close_current()
        self._index = -1
        return self.records


class PartSource(Protocol):
    """The concatenated bytes of a bundle's parts, each checked as it is
    read (:class:`PartReader` for files; an S3 reader for buckets)."""

    def readinto(self, buffer: memoryview) -> int: ...


@dataclass(frozen=True)
class PartSpec:
    """What the manifest says of one part."""

    path: Path
    sha1: str


class PartReader(io.RawIOBase):
    """The concatenated bytes of a bundle's parts, each checked against the
    manifest's SHA-1 when its last byte has been read, and the total against
    ``bundled_size`` (unless None). Problems raise :class:`IntegrityError` naming the part.
    """

    def __init__(
        self,
        parts: Sequence[PartSpec],
        bundled_size: int | None,
        *,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self._parts = parts
        self._bundled_size = bundled_size
        self._on_bytes = on_bytes
        self._next = 0
        self._file: io.BufferedReader | None = None
        self._hash = hashlib.sha1()
        self._part_bytes = 0
        self.total = 0
        self.checked = 0  # parts fully read and verified

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._file is None and not self._open_next():
                return 0
            assert self._file is not None
            n = self._file.readinto(buffer)
            if n:
                chunk = memoryview(buffer)[:n]
                self._hash.update(chunk)
                self._part_bytes += n
                self.total += n
                if self._bundled_size is not None and self.total > self._bundled_size:
                    raise IntegrityError(
                        f"the parts hold more than the manifest's bundled_size "
                        f"({self._bundled_size} bytes); {self._current().path.name} is too long"
                    )
                if self._on_bytes:
                    self._on_bytes(n)
                return n
            self._check_current()

    def _current(self) -> PartSpec:
        return self._parts[self._next - 1]

    def _open_next(self) -> bool:
        if self._next == len(self._parts):
            if self._bundled_size is not None and self.total != self._bundled_size:
                raise IntegrityError(
                    f"the parts hold {self.total} bytes but the manifest says "
                    f"bundled_size {self._bundled_size}: a part is truncated"
                )
            return False
        spec = self._parts[self._next]
        try:
            fd = open_input(spec.path, "part")
            self._file = os.fdopen(fd, "rb")  # closed in _check_current
        except StorageError as err:
            raise IntegrityError(str(err)) from None
        except FileNotFoundError:
            raise IntegrityError(
                f"part {spec.path.name} is missing from {spec.path.parent}"
            ) from None
        except OSError as err:
            raise IntegrityError(f"cannot read part {spec.path}: {err.strerror}") from None
        self._next += 1
        self._hash = hashlib.sha1()
        self._part_bytes = 0
        return True

    def _check_current(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        spec = self._current()
        if self._part_bytes == 0:
            raise IntegrityError(f"part {spec.path.name} is empty")
        if self._hash.hexdigest() != spec.sha1:
            raise IntegrityError(
                f"part {spec.path.name} is damaged: its SHA-1 does not match the manifest"
            )
        self.checked += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()
