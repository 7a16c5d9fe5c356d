"""Progress for the command line: :class:`amibundle.progress.Progress` as bars or log lines.

Three styles, chosen with ``--progress`` (:func:`add_progress_option`):

* ``bar``: one tqdm bar per :class:`~amibundle.progress.Stage`, redrawn in place;
* ``lines``: for logs (CI jobs, ``2> file``), one plain line per stage at 25,
  50 and 75% (once the stage has run a second) and otherwise at most every 10
  seconds, with bytes, rate and ETA, and one when a stage that showed any
  ends;
* ``none``.

``auto`` (the default) draws bars on a terminal and lines elsewhere; ``-q``
and ``--json`` turn it off unless a style is asked for. Everything goes to
stderr so stdout stays for results. Byte counts are kept whatever the style,
so a command can report totals. The library calls from worker threads, so all
state sits behind one lock.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import NoReturn, TextIO

from tqdm import tqdm

from amibundle.cli._common import human_size
from amibundle.cli._options import OptionParser
from amibundle.progress import Stage

__all__ = [
    "LINE_INTERVAL",
    "QUARTER_AFTER",
    "CommandProgress",
    "ProgressStyle",
    "TqdmProgress",
    "add_progress_option",
    "progress_for",
]

LINE_INTERVAL = 10.0  # seconds between two time-driven lines of one stage
QUARTER_AFTER = 1.0  # a stage shorter than this is not worth its quarter lines
_QUARTERS = (25, 50, 75)


class ProgressStyle(str, Enum):
    AUTO = "auto"
    BAR = "bar"
    LINES = "lines"
    NONE = "none"


def add_progress_option(parser: OptionParser) -> None:
    """``--progress auto|bar|lines|none``: every long command has it (then
    :func:`progress_for` builds the reporter from the parsed arguments)."""
    parser.add_argument(
        "--progress",
        choices=[style.value for style in ProgressStyle],
        default=ProgressStyle.AUTO.value,
        help="bars on a terminal, lines in logs (auto, the default), or force bar, "
        "lines or none; -q and --json mean none unless a style is given",
    )


def progress_for(args: argparse.Namespace, *, stream: TextIO | None = None) -> CommandProgress:
    """The progress reporter a command's options ask for (``--progress``,
    ``-q``, ``--json``); use it as a context manager."""
    style = ProgressStyle(getattr(args, "progress", ProgressStyle.AUTO.value))
    quiet = bool(getattr(args, "quiet", False) or getattr(args, "json", False))
    return CommandProgress(style=style, quiet=quiet, stream=stream)


@dataclass
class _LineState:
    """One stage's counters for the lines style."""

    total: int | None
    started: float
    last_line: float
    done: int = 0
    quarters: list[int] = field(default_factory=lambda: list(_QUARTERS))
    printed: bool = False


class CommandProgress:
    """A thread-safe :class:`~amibundle.progress.Progress` drawing bars or lines."""

    def __init__(
        self,
        *,
        style: ProgressStyle = ProgressStyle.AUTO,
        quiet: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._requested = style
        self._quiet = quiet
        self._clock = clock
        self._lock = threading.Lock()
        self._bars: dict[Stage, tqdm[NoReturn]] = {}
        self._lines: dict[Stage, _LineState] = {}
        self._done: dict[Stage, int] = {}
        self._totals: dict[Stage, int | None] = {}

    @property
    def style(self) -> ProgressStyle:
        """The style in effect: ``auto`` resolved, ``-q`` applied."""
        if self._requested is not ProgressStyle.AUTO:
            return self._requested
        if self._quiet:
            return ProgressStyle.NONE
        return ProgressStyle.BAR if _is_terminal(self._output()) else ProgressStyle.LINES

    @property
    def enabled(self) -> bool:
        """Whether bars are drawn."""
        return self.style is ProgressStyle.BAR

    def start(self, stage: Stage, total: int | None) -> None:
        with self._lock:
            self._close_locked(stage)  # a restarted stage starts afresh
            self._done[stage] = 0
            self._totals[stage] = total
            style = self.style
            if style is ProgressStyle.BAR:
                self._bars[stage] = self._new_bar(stage, total)
            elif style is ProgressStyle.LINES:
                now = self._clock()
                self._lines[stage] = _LineState(total, now, now)

    def advance(self, stage: Stage, nbytes: int) -> None:
        with self._lock:
            if stage not in self._done:
                # Tolerate a stage the library did not announce: count it anyway.
                self._done[stage] = 0
                self._totals[stage] = None
            self._done[stage] += nbytes
            bar = self._bars.get(stage)
            if bar is not None:
                bar.update(nbytes)  # negative after a rewind is fine
            lines = self._lines.get(stage)
            if lines is not None:
                self._advance_lines(stage, lines, nbytes)

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        with self._lock:
            bar = self._bars.get(stage)
            if bar is not None and error is not None:
                bar.set_postfix_str("failed", refresh=False)
            lines = self._lines.get(stage)
            # A stage that showed progress says it ended (a failure: the error says).
            if lines is not None and lines.printed and error is None:
                self._write(f"{stage.value}: done, {self._figures(lines, finished=True)}")
            self._close_locked(stage)

    def done(self, stage: Stage) -> int:
        """Bytes reported for ``stage`` so far (the sum of all deltas)."""
        with self._lock:
            return self._done.get(stage, 0)

    def total(self, stage: Stage) -> int | None:
        """The total announced by the last ``start`` of ``stage``, if any."""
        with self._lock:
            return self._totals.get(stage)

    def __enter__(self) -> CommandProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every bar still open (e.g. after an interrupt)."""
        with self._lock:
            for stage in [*self._bars, *self._lines]:
                self._close_locked(stage)

    # -- lines --------------------------------------------------------------------------

    def _advance_lines(self, stage: Stage, lines: _LineState, nbytes: int) -> None:
        lines.done += nbytes
        now = self._clock()
        crossed = False
        if lines.total:
            percent = lines.done * 100 // lines.total
            while lines.quarters and percent >= lines.quarters[0]:
                lines.quarters.pop(0)
                crossed = now - lines.started >= QUARTER_AFTER
        if crossed or now - lines.last_line >= LINE_INTERVAL:
            lines.last_line = now
            lines.printed = True
            self._write(f"{stage.value}: {self._figures(lines)}")

    def _figures(self, lines: _LineState, *, finished: bool = False) -> str:
        elapsed = max(self._clock() - lines.started, 1e-6)
        rate = lines.done / elapsed
        amount = human_size(lines.done)
        if lines.total and not finished:
            amount += f" of {human_size(lines.total)} ({lines.done * 100 // lines.total}%)"
        text = f"{amount}, {rate / 1e6:.1f} MB/s"
        if finished:
            return f"{amount} in {_duration(elapsed)} ({rate / 1e6:.1f} MB/s)"
        if lines.total and rate > 0:
            text += f", ETA {_duration(max(lines.total - lines.done, 0) / rate)}"
        return text

    def _write(self, line: str) -> None:
        stream = self._output()
        stream.write(line + "\n")
        stream.flush()

    # -- bars ---------------------------------------------------------------------------

    def _new_bar(self, stage: Stage, total: int | None) -> tqdm[NoReturn]:
        return tqdm(
            total=total,
            desc=stage.value,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self._output(),
            leave=True,
            dynamic_ncols=True,
        )

    def _close_locked(self, stage: Stage) -> None:
        bar = self._bars.pop(stage, None)
        if bar is not None:
            bar.close()
        self._lines.pop(stage, None)

    def _output(self) -> TextIO:
        # Looked up late so a test's captured stderr is the one used.
        return self._stream if self._stream is not None else sys.stderr


TqdmProgress = CommandProgress  # the name commands used before lines came in


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or a bare writer
        return False
