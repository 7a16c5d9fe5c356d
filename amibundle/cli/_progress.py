"""Progress bars for the command line: :class:`amibundle.progress.Progress` drawn with tqdm.

One bar per :class:`~amibundle.progress.Stage`, counting bytes with unit
scaling, on stderr so stdout stays for results. Bars are off when stderr is not
a terminal (logs and pipes get no control characters) or when ``--quiet`` was
given; the byte counts are kept either way, so a command can still report
totals. The library calls from worker threads, so all bar state sits behind one
lock.
"""

from __future__ import annotations

import sys
import threading
from typing import NoReturn, TextIO

from tqdm import tqdm

from amibundle.progress import Stage

__all__ = ["TqdmProgress"]


class TqdmProgress:
    """A thread-safe :class:`~amibundle.progress.Progress` that draws tqdm bars."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._quiet = quiet
        self._lock = threading.Lock()
        self._bars: dict[Stage, tqdm[NoReturn]] = {}
        self._done: dict[Stage, int] = {}
        self._totals: dict[Stage, int | None] = {}

    @property
    def enabled(self) -> bool:
        """Whether bars are drawn at all."""
        return not self._quiet and _is_terminal(self._output())

    def start(self, stage: Stage, total: int | None) -> None:
        with self._lock:
            self._close_locked(stage)  # a restarted stage gets a fresh bar
            self._done[stage] = 0
            self._totals[stage] = total
            self._bars[stage] = self._new_bar(stage, total)

    def advance(self, stage: Stage, nbytes: int) -> None:
        with self._lock:
            if stage not in self._bars:
                # Tolerate a stage the library did not announce: count it anyway.
                self._done.setdefault(stage, 0)
                self._totals.setdefault(stage, None)
                self._bars[stage] = self._new_bar(stage, None)
            self._done[stage] += nbytes
            self._bars[stage].update(nbytes)  # negative after a rewind is fine

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        with self._lock:
            bar = self._bars.get(stage)
            if bar is not None and error is not None:
                bar.set_postfix_str("failed", refresh=False)
            self._close_locked(stage)

    def done(self, stage: Stage) -> int:
        """Bytes reported for ``stage`` so far (the sum of all deltas)."""
        with self._lock:
            return self._done.get(stage, 0)

    def total(self, stage: Stage) -> int | None:
        """The total announced by the last ``start`` of ``stage``, if any."""
        with self._lock:
            return self._totals.get(stage)

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every bar still open (e.g. after an interrupt)."""
        with self._lock:
            for stage in list(self._bars):
                self._close_locked(stage)

    def _new_bar(self, stage: Stage, total: int | None) -> tqdm[NoReturn]:
        return tqdm(
            total=total,
            desc=stage.value,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self._output(),
            disable=not self.enabled,
            leave=True,
            dynamic_ncols=True,
        )

    def _close_locked(self, stage: Stage) -> None:
        bar = self._bars.pop(stage, None)
        if bar is not None:
            bar.close()

    def _output(self) -> TextIO:
        # Looked up late so a test's captured stderr is the one used.
        return self._stream if self._stream is not None else sys.stderr


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or a bare writer
        return False
