"""The classic tools' option lists, read from ../shared/spec/classic-cli.md itself.

Reading the spec (rather than copying its lists) means a test built on these cannot drift
from it: every classic command's options come from its "Options" table (§2.2 ... §9.2)
plus the common options of §1.3. Tests using this skip when ../shared is absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from tests.support.common import SHARED

__all__ = ["CLASSIC_SPEC", "TOOL_SECTIONS", "ClassicOptions", "classic_options"]

CLASSIC_SPEC = SHARED / "spec" / "classic-cli.md"
# Each classic tool and the number of its section; its options table is "### <n>.2".
TOOL_SECTIONS = {
    "ec2-bundle-image": 2,
    "ec2-bundle-vol": 3,
    "ec2-upload-bundle": 4,
    "ec2-download-bundle": 5,
    "ec2-unbundle": 6,
    "ec2-delete-bundle": 7,
    "ec2-migrate-manifest": 8,
    "ec2-migrate-bundle": 9,
}
_LONG = re.compile(r"`(--[a-z0-9][a-z0-9-]*)`")
_SHORT = re.compile(r"`(-[A-Za-z])`")


@dataclass(frozen=True)
class ClassicOptions:
    """One tool's options: every long option, and each short letter's long option."""

    longs: tuple[str, ...]
    shorts: dict[str, str]


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the table rows under ``heading`` (up to the next heading)."""
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    rows = []
    for line in text[start : end if end != -1 else len(text)].splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header row


def _options_of(rows: list[list[str]]) -> tuple[list[str], dict[str, str]]:
    longs: list[str] = []
    shorts: dict[str, str] = {}
    for row in rows:
        names = _LONG.findall(row[1])
        longs += names
        for short in _SHORT.findall(row[0]):
            shorts[short] = names[0]
    return longs, shorts


@cache
def classic_options(tool: str) -> ClassicOptions:
    """``tool``'s options as the spec lists them, common options first."""
    text = CLASSIC_SPEC.read_text(encoding="utf-8")
    common_longs, common_shorts = _options_of(
        _table_rows(text, "### 1.3 Common options")
    )
    number = TOOL_SECTIONS[tool]
    own_longs, own_shorts = _options_of(_table_rows(text, f"### {number}.2 Options"))
    longs = tuple(dict.fromkeys([*common_longs, *own_longs]))
    return ClassicOptions(longs, {**common_shorts, **own_shorts})
