"""Pieces shared by the command modules: version text, summaries, sizes."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from amibundle import __version__
from amibundle.cli._options import OptionParser, Style
from amibundle.errors import plural
from amibundle.progress import Progress, Stage

__all__ = [
    "CLASSIC_VERSION",
    "Announcements",
    "NOTICE",
    "command_parser",
    "human_size",
    "plural",
    "print_json",
    "rate",
    "rate_note",
    "version_text",
]

CLASSIC_VERSION = "1.5.3 20071010"  # the ec2-ami-tools release and manifest format we match
NOTICE = (
    "amibundle is a reimplementation of Amazon's ec2-ami-tools, compatible with\n"
    "their command-line interface and bundle format. Licensed under Apache-2.0."
)


def version_text(tool: str | None) -> str:
    """``ec2-bundle-image 1.5.3 20071010 (amibundle 0.1.0)`` and the notice,
    in the classic layout, so scripts reading the second word still work."""
    head = f"{tool} {CLASSIC_VERSION}" if tool else CLASSIC_VERSION
    return f"{head} (amibundle {__version__})\n\n{NOTICE}\n"


def human_size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(nbytes) < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / max(seconds, 1e-6) / 1e6:.0f} MB/s"


# Below these a rate says nothing (it would read "0 MB/s" or come from timer noise).
_RATE_MIN_BYTES = 1 << 20
_RATE_MIN_SECONDS = 0.05


def rate_note(nbytes: int, seconds: float, what: str = "") -> str:
    """`` (431 MB/s of image data)`` for a summary line; empty for amounts or
    times too small for a rate to mean anything."""
    if nbytes < _RATE_MIN_BYTES or seconds < _RATE_MIN_SECONDS:
        return ""
    return f" ({rate(nbytes, seconds)}{' ' + what if what else ''})"


def print_json(data: Mapping[str, Any]) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def command_parser(
    prog: str, style: Style, *, description: str, manual: str, usage: str | None = None
) -> OptionParser:
    """The parser of one command, with its help, manual and version text
    (classic tools print their own name in ``--version``, as the Ruby tools did)."""
    return OptionParser(
        prog,
        style=style,
        description=description,
        manual=manual,
        version=version_text(prog if style is Style.CLASSIC else None),
        usage=usage,
    )


class Announcements:
    """What a command says besides its result: "Bundling x into y ...",
    notes about the options, the library's notes. One rule for all of it:

    * held back until the library has checked every input: lines added with
      :meth:`add` are printed at the library's first sign of work (its first
      progress stage, or its first note), never before an error about an
      argument; lines not printed by then (the library failed first) are
      dropped;
    * silenced by ``-q`` (``quiet``), which leaves only errors and the final
      result;
    * kept off stdout with ``--json`` (``json_output``), which is the JSON
      document's alone.

    Build it from the parsed arguments with :meth:`of`."""

    def __init__(self, *, quiet: bool = False, json_output: bool = False) -> None:
        self._quiet = quiet
        self._json = json_output
        self._pending: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    @classmethod
    def of(cls, args: argparse.Namespace) -> Announcements:
        """The announcements of a command run with ``args`` (``-q``, ``--json``)."""
        return cls(
            quiet=bool(getattr(args, "quiet", False)),
            json_output=bool(getattr(args, "json", False)),
        )

    def add(self, line: str, *, stderr: bool = False) -> None:
        """Holds ``line`` until the work starts."""
        if self._quiet:
            return
        with self._lock:
            self._pending.append((line, stderr or self._json))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for line, to_stderr in pending:
            print(line, file=sys.stderr if to_stderr else sys.stdout, flush=True)

    def say(self, line: str, *, stderr: bool = False) -> None:
        """Prints ``line`` now (once the held lines are out), unless quiet."""
        self.flush()
        if not self._quiet:
            print(line, file=sys.stderr if stderr or self._json else sys.stdout, flush=True)

    def progress(self, inner: Progress) -> Progress:
        """``inner``, printing the held lines at the first ``start``."""
        return _AnnouncingProgress(inner, self)

    def notify(self, say: Callable[[str], None] | None = None) -> Callable[[str], None]:
        """A ``notify`` for the library: the held lines first, then the line,
        by ``say`` (default: :meth:`say`, a ``note:`` line)."""

        def notify(line: str) -> None:
            if say is None:
                self.say(f"note: {line}")
            else:
                self.flush()
                say(line)

        return notify


class _AnnouncingProgress:
    def __init__(self, inner: Progress, announcements: Announcements) -> None:
        self._inner = inner
        self._announcements = announcements

    def start(self, stage: Stage, total: int | None) -> None:
        self._announcements.flush()
        self._inner.start(stage, total)

    def advance(self, stage: Stage, nbytes: int) -> None:
        self._inner.advance(stage, nbytes)

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        self._inner.finish(stage, error)
