"""A plain (raw) image file: read with pread, holes found with SEEK_DATA.

This is the path the benchmarks measure; it is the code ``bundling`` had
before other formats came in, unchanged: the pipeline preads the file
descriptor itself, so a raw image costs no extra layer.
"""

from __future__ import annotations

import os
import stat

from amibundle.format.tar import Extent
from amibundle.progress import Progress
from amibundle.sources.base import ImageFormat, Layout, SizeOrigin, SourceInfo
from amibundle.sparse import carve_zero_runs, data_extents

__all__ = ["PlainFile"]


class PlainFile:
    """A raw image open on ``fd`` (owned: :meth:`close` closes it)."""

    def __init__(self, fd: int, label: str, st: os.stat_result) -> None:
        self._fd = fd
        self._info = SourceInfo(
            label=label,
            format=ImageFormat.RAW,
            size=st.st_size,
            size_origin=SizeOrigin.FILE,
            size_detail="",
            passes=1,
            mode=stat.S_IMODE(st.st_mode),
            mtime=int(st.st_mtime),
        )

    @property
    def info(self) -> SourceInfo:
        return self._info

    @property
    def reader(self) -> int:
        return self._fd

    def layout(self, progress: Progress, size_limit: int | None) -> Layout:
        size = self._info.size or 0  # checked against the limit before the layout
        extents = carve_zero_runs(self._fd, data_extents(self._fd, size))
        dense = size == 0 or extents == [Extent(0, size)]
        # The ExtentMap as it is: millions of extents stay compact.
        return Layout(size, None if dense else extents, SizeOrigin.FILE)

    def close(self) -> None:
        os.close(self._fd)
