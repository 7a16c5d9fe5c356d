"""Disk images in qemu's formats (qcow2, VMDK, VHD, VHDX), read through qemu-img.

* **Layout**: ``qemu-img map --output=json`` lists which ranges hold data
  and which read as zeros (unallocated or zero clusters), from the image's
  metadata alone. The data ranges become the tar member's extents: holes
  stay holes, and nothing is read to find them.
* **Data**: ``qemu-img`` cannot write raw output to a pipe (it truncates
  and resizes its target), and ``qemu-nbd`` would need the kernel's nbd
  module and root to be read as a device. So the data ranges are converted
  window by window (at most :data:`WINDOW` bytes of the virtual disk each,
  several nearby ranges per window) into a small scratch file, which the
  pipeline preads; the next window is converted in the background while the
  current one is read. The two scratch files never exceed a window each
  (qemu writes zeros as holes), are private (a 0700 folder) and are removed
  at the end: no full-size intermediate file.
* **Zero runs**: a first pass converts the mapped ranges the same way and
  asks each window for its data (SEEK_DATA: qemu-img skipped the zeros) and
  zero granules, as for a plain file. Some drivers (VHDX in qemu 7) map
  every block as data, and allocated clusters may hold zeros; the second
  pass then converts only what holds data.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from amibundle import tools
from amibundle.errors import ImageSourceError, ToolError
from amibundle.files import work_prefix
from amibundle.format.tar import Extent
from amibundle.progress import Progress, Stage
from amibundle.sources.base import ImageFormat, Layout, SizeOrigin, SourceInfo
from amibundle.sparse import carve_zero_runs, data_extents, read_extents
from amibundle.validate import image_too_large

__all__ = ["WINDOW", "QemuImage", "data_extents_of_map", "windows"]

WINDOW = 64 << 20
_QEMU_DRIVER = {
    ImageFormat.QCOW2: "qcow2",
    ImageFormat.VMDK: "vmdk",
    ImageFormat.VHD: "vpc",
    ImageFormat.VHDX: "vhdx",
}


def data_extents_of_map(entries: Iterable[dict[str, Any]]) -> list[Extent]:
    """The ranges of ``qemu-img map --output=json`` that hold data (not
    zero), adjacent ones merged."""
    extents: list[Extent] = []
    for entry in entries:
        if not entry.get("data") or entry.get("zero"):
            continue
        start, length = int(entry["start"]), int(entry["length"])
        if length <= 0:
            continue
        if extents and extents[-1].offset + extents[-1].length == start:
            last = extents.pop()
            extents.append(Extent(last.offset, last.length + length))
        else:
            extents.append(Extent(start, length))
    return extents


def _shifted(extents: Iterable[Extent], by: int) -> list[Extent]:
    return [Extent(extent.offset + by, extent.length) for extent in extents]


def _intersect(first: Sequence[Extent], second: Sequence[Extent]) -> list[Extent]:
    """The ranges in both lists (each sorted, without overlaps)."""
    found: list[Extent] = []
    i = j = 0
    while i < len(first) and j < len(second):
        a, b = first[i], second[j]
        start = max(a.offset, b.offset)
        end = min(a.offset + a.length, b.offset + b.length)
        if start < end:
            found.append(Extent(start, end - start))
        if a.offset + a.length < b.offset + b.length:
            i += 1
        else:
            j += 1
    return found


def windows(extents: Iterable[Extent], limit: int = WINDOW) -> Iterator[list[Extent]]:
    """``extents`` (split to at most ``limit`` bytes each) grouped so that
    each group spans at most ``limit`` bytes of the disk."""
    group: list[Extent] = []
    for extent in extents:
        offset, end = extent.offset, extent.offset + extent.length
        while offset < end:
            piece = Extent(offset, min(end, offset + limit) - offset)
            offset += piece.length
            if group and piece.offset + piece.length - group[0].offset > limit:
                yield group
                group = []
            group.append(piece)
    if group:
        yield group


class QemuImage:
    """A qcow2, VMDK, VHD or VHDX image file, read through qemu-img."""

    def __init__(self, path: Path, label: str, kind: ImageFormat) -> None:
        self._path = path.absolute()
        self._label = label
        self._kind = kind
        self._driver = _QEMU_DRIVER[kind]
        info = self._qemu_json(["info", "--output=json", "-f", self._driver, str(self._path)])
        st = self._path.stat()
        self._backing = info.get("backing-filename")
        self._info = SourceInfo(
            label=label,
            format=kind,
            size=int(info["virtual-size"]),
            size_origin=SizeOrigin.FORMAT,
            size_detail=f"the {kind.value} header",
            passes=2,
            mode=stat.S_IMODE(st.st_mode),
            mtime=int(st.st_mtime),
        )
        self._scratch: Path | None = None

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def backing_file(self) -> str | None:
        return str(self._backing) if self._backing else None

    @property
    def reader(self) -> QemuImage:
        return self

    def layout(self, progress: Progress, size_limit: int | None) -> Layout:
        size = self._info.size
        assert size is not None
        if size_limit is not None and size > size_limit:
            raise image_too_large(size)
        entries = self._qemu_json(["map", "--output=json", "-f", self._driver, str(self._path)])
        mapped = data_extents_of_map(entries)
        progress.start(Stage.SCAN, sum(extent.length for extent in mapped))
        try:
            extents = self._zero_runs_carved(mapped, progress)
        except BaseException as err:
            progress.finish(Stage.SCAN, err)
            raise
        progress.finish(Stage.SCAN)
        dense = extents == [Extent(0, size)]
        return Layout(size, None if dense else tuple(extents), SizeOrigin.FORMAT)

    def _zero_runs_carved(self, mapped: list[Extent], progress: Progress) -> list[Extent]:
        """``mapped`` without its zero runs. qemu-img writes zeros as holes
        (and some drivers, VHDX among them, map every block as data), so each
        converted window is asked for its data (SEEK_DATA) and its zero
        granules, as a plain file is."""
        carved: list[Extent] = []
        for group, chunk in self._converted(mapped):
            start = group[0].offset
            fd = os.open(chunk, os.O_RDONLY)
            try:
                span = group[-1].offset + group[-1].length - start
                in_chunk = _intersect(data_extents(fd, span), _shifted(group, -start))
                carved += _shifted(carve_zero_runs(fd, in_chunk), start)
            finally:
                os.close(fd)
            progress.advance(Stage.SCAN, sum(extent.length for extent in group))
        return carved

    def read_extents(
        self, extents: Iterable[Extent], buffers: Iterator[bytearray]
    ) -> Iterator[memoryview]:
        for group, chunk in self._converted(extents):
            fd = os.open(chunk, os.O_RDONLY)
            try:
                yield from read_extents(fd, _shifted(group, -group[0].offset), buffers)
            finally:
                os.close(fd)

    def _converted(self, extents: Iterable[Extent]) -> Iterator[tuple[list[Extent], Path]]:
        """Each window of ``extents`` and the scratch file holding it; the
        next window is converted in the background while one is used."""
        folder = self._scratch_folder()
        chunks = [folder / "window-a.raw", folder / "window-b.raw"]
        groups = windows(extents, WINDOW)  # read now: tests make it small
        with concurrent.futures.ThreadPoolExecutor(1, "amibundle-qemu-img") as pool:
            pending = self._convert_next(pool, groups, chunks[0])
            turn = 0
            while pending is not None:
                group, chunk = pending[0], pending[1].result()
                turn ^= 1
                pending = self._convert_next(pool, groups, chunks[turn])
                yield group, chunk

    def _convert_next(
        self,
        pool: concurrent.futures.ThreadPoolExecutor,
        groups: Iterator[list[Extent]],
        chunk: Path,
    ) -> tuple[list[Extent], concurrent.futures.Future[Path]] | None:
        group = next(groups, None)
        if group is None:
            return None
        return group, pool.submit(self._convert, group, chunk)

    def _convert(self, group: list[Extent], chunk: Path) -> Path:
        start = group[0].offset
        span = group[-1].offset + group[-1].length - start
        spec = {
            "driver": "raw",
            "offset": start,
            "size": span,
            "file": {
                "driver": self._driver,
                "file": {"driver": "file", "filename": str(self._path)},
            },
        }
        self._qemu(["convert", "-q", "-O", "raw", "json:" + json.dumps(spec), str(chunk)])
        return chunk

    def _scratch_folder(self) -> Path:
        if self._scratch is None:
            # Mode 0700, named like everything amibundle writes before it is complete.
            self._scratch = Path(tempfile.mkdtemp(prefix=work_prefix(), suffix=".qemu"))
        return self._scratch

    def _qemu(self, words: list[str]) -> str:
        try:
            return tools.run(["qemu-img", *words]).stdout
        except ToolError as err:
            lines = [line for line in err.stderr_tail.splitlines() if line.strip()]
            detail = lines[-1].strip() if lines else f"exit {err.returncode}"
            raise ImageSourceError(
                f"qemu-img cannot read {self._label} as {self._kind.value}: {detail}"
            ) from None

    def _qemu_json(self, words: list[str]) -> Any:
        text = self._qemu(words)
        try:
            return json.loads(text)
        except ValueError:
            raise ImageSourceError(
                f"qemu-img {words[0]} gave unexpected output for {self._label}"
            ) from None

    def close(self) -> None:
        if self._scratch is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._scratch)
            self._scratch = None
