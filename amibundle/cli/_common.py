"""Pieces shared by the command modules: version text, summaries, sizes."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from amibundle import __version__
from amibundle.cli._options import OptionParser, Style

__all__ = [
    "CLASSIC_VERSION",
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


def plural(count: int, noun: str) -> str:
    """``1 part``, ``2 parts``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


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
