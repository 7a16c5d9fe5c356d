"""Progress reporting for long streams.

The library reports progress through a :class:`Progress` object that the
caller passes in; the CLI draws it with tqdm, a CI job may log it, and tests
record it. Calls may come from worker threads, so implementations must be
thread-safe. :class:`BatchedProgress` coalesces small deltas so a listener is
not called once per 64 KiB buffer.
"""

from __future__ import annotations

import threading
from enum import Enum
from typing import Protocol

__all__ = ["BatchedProgress", "NullProgress", "Progress", "Stage"]


class Stage(str, Enum):
    """The long-running steps the library reports on."""

    SCAN = "scan"  # a first pass over a stream, for its size and zero runs
    READ = "read"
    VERIFY = "verify"
    EXTRACT = "extract"
    UPLOAD = "upload"
    DOWNLOAD = "download"
    COPY = "copy"  # server-side, bucket to bucket


class Progress(Protocol):
    """What the library calls while it works."""

    def start(self, stage: Stage, total: int | None) -> None:
        """A stage begins; ``total`` is the number of bytes expected, if known."""

    def advance(self, stage: Stage, nbytes: int) -> None:
        """``nbytes`` more bytes are done (negative after a rewind)."""

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        """A stage ended, successfully when ``error`` is None."""


class NullProgress:
    """Progress that goes nowhere: the default when the caller passes none."""

    def start(self, stage: Stage, total: int | None) -> None:
        pass

    def advance(self, stage: Stage, nbytes: int) -> None:
        pass

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        pass


class BatchedProgress:
    """Wraps a listener and forwards deltas once they add up to ``threshold``.

    ``finish`` flushes what is pending first, so totals always add up.
    """

    def __init__(self, inner: Progress, threshold: int = 1 << 20) -> None:
        self._inner = inner
        self._threshold = threshold
        self._pending: dict[Stage, int] = {}
        self._lock = threading.Lock()

    def start(self, stage: Stage, total: int | None) -> None:
        self._inner.start(stage, total)

    def advance(self, stage: Stage, nbytes: int) -> None:
        with self._lock:
            pending = self._pending.get(stage, 0) + nbytes
            if abs(pending) < self._threshold:
                self._pending[stage] = pending
                return
            self._pending[stage] = 0
        self._inner.advance(stage, pending)

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        with self._lock:
            pending = self._pending.pop(stage, 0)
        if pending:
            self._inner.advance(stage, pending)
        self._inner.finish(stage, error)
