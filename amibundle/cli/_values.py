"""Value converters for options (argparse ``type=``), with the classic tools' rules.

Each raises ``argparse.ArgumentTypeError``; the parser turns it into one
usage error naming the option.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "choice_prefix",
    "comma_list",
    "existing_dir",
    "existing_file",
    "folder_to_make",
    "integer",
    "or_list",
]


def choice_prefix(choices: Sequence[str]) -> Callable[[str], str]:
    """A ``type=`` accepting a choice or a unique prefix of one (``g`` -> ``gpt``)."""
    values = tuple(choices)

    def convert(value: str) -> str:
        if value in values:
            return value
        matches = [choice for choice in values if value and choice.startswith(value)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise argparse.ArgumentTypeError(f"{value!r} is ambiguous: {or_list(matches)}")
        raise argparse.ArgumentTypeError(f"{value!r}: expected one of {', '.join(values)}")

    convert.__name__ = "choice"
    return convert


def existing_file(value: str) -> Path:
    """A path that exists and is a regular file (symlinks followed)."""
    path = Path(value)
    if not value or not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r}: not a regular file")
    return path


def existing_dir(value: str) -> Path:
    """A path that exists and is a directory."""
    path = Path(value)
    if not value or not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r}: no such directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r}: not a directory")
    return path


def folder_to_make(value: str) -> Path:
    """An existing directory, or a path where one can be created: its nearest
    existing ancestor is a directory. The command creates it (and removes
    it again if it fails); see ``OptionParser.folders_to_make``."""
    path = Path(value)
    if not value:
        raise argparse.ArgumentTypeError(f"{value!r}: no such directory")
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                raise argparse.ArgumentTypeError(f"{value!r}: {place} is not a directory")
            return path
    return path


_RUBY_INTEGER = re.compile(
    r"""
    (?P<sign>[-+]?)
    (?:
        0[xX](?P<hex>[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*)
      | 0[bB](?P<bin>[01]+(?:_[01]+)*)
      | 0[oO]?(?P<oct>[0-7]+(?:_[0-7]+)*)
      | 0[dD](?P<dec>[0-9]+(?:_[0-9]+)*)
      | (?P<plain>0|[1-9][0-9]*(?:_[0-9]+)*)
    )
    """,
    re.VERBOSE,
)
_RADIX = {"hex": 16, "bin": 2, "oct": 8, "dec": 10, "plain": 10}


def integer(value: str) -> int:
    """Any Ruby integer literal: sign, ``0x``/``0b``/``0o``/``0d`` prefixes, ``_`` separators.

    As in Ruby, a leading ``0`` means octal (``010`` is 8, ``09`` is invalid).
    """
    match = _RUBY_INTEGER.fullmatch(value)
    if match is None:
        raise argparse.ArgumentTypeError(f"{value!r}: not an integer")
    for group, radix in _RADIX.items():
        digits = match.group(group)
        if digits is not None:
            number = int(digits.replace("_", ""), radix)
            return -number if match.group("sign") == "-" else number
    raise AssertionError("unreachable: the pattern always captures digits")


def comma_list(value: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; empty or blank items are refused."""
    items = value.split(",")
    if any(not item.strip() for item in items):
        raise argparse.ArgumentTypeError(f"{value!r}: empty item in comma-separated list")
    return items


def or_list(items: Sequence[str]) -> str:
    """``a, b or c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"
