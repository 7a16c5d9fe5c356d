"""Pieces shared by the command modules: version text, summaries, sizes."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from amibundle import __version__
from amibundle.cli._options import OptionParser, Style
from amibundle.progress import Progress, Stage

__all__ = [
    "CLASSIC_VERSION",
    "Announcements",
    "NOTICE",
    "command_parser",
    "human_size",
    "print_json",
    "rate",
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
    """What a command says before its work starts ("Bundling x into y ...",
    notes about the options), held back until the library has checked every
    input: it is printed at the library's first sign of work (its first
    progress stage, or its first notice), never before an error about an
    argument. Lines not printed by then (the library failed first) are
    dropped."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    def add(self, line: str, *, stderr: bool = False) -> None:
        with self._lock:
            self._pending.append((line, stderr))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for line, to_stderr in pending:
            print(line, file=sys.stderr if to_stderr else sys.stdout, flush=True)

    def progress(self, inner: Progress) -> Progress:
        """``inner``, printing the held lines at the first ``start``."""
        return _AnnouncingProgress(inner, self)

    def notify(self, say: Callable[[str], None]) -> Callable[[str], None]:
        """``say``, printing the held lines first."""

        def notify(line: str) -> None:
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
