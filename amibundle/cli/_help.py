"""Help text: a wider option column, stated defaults, and a compact usage line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["MANDATORY_ATTR", "HelpFormatter", "compact_usage"]

# Set on the argparse actions of mandatory options (by ``_options.mandatory``).
MANDATORY_ATTR = "_amibundle_mandatory"


class HelpFormatter(argparse.HelpFormatter):
    """Wider option column; appends "(default: X)" when a default says something."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text.lower()
            and default not in (None, False, True, argparse.SUPPRESS, [], "")
        ):
            text += " (default: %(default)s)"
        return text


def compact_usage(
    actions: Sequence[argparse.Action], positionals: Sequence[argparse.Action]
) -> str:
    """``%(prog)s -c PATH -k PATH [options] FILE``: mandatory options spelt out."""
    parts: list[str] = []
    has_optional = False
    for action in actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if getattr(action, MANDATORY_ATTR, None) is not None:
            flag = min(action.option_strings, key=len)
            parts.append(flag if action.nargs == 0 else f"{flag} {_metavar(action)}")
        else:
            has_optional = True
    if has_optional:
        parts.append("[options]")
    parts += [_positional_usage(action) for action in positionals]
    # argparse expands %(prog)s in a usage string, so escape our own text.
    return " ".join(["%(prog)s", *(part.replace("%", "%%") for part in parts)])


def _metavar(action: argparse.Action) -> str:
    metavar = action.metavar
    if isinstance(metavar, tuple):
        return " ".join(metavar)
    return metavar or action.dest.upper()


def _positional_usage(action: argparse.Action) -> str:
    name = _metavar(action) if action.metavar else action.dest
    if action.nargs == argparse.OPTIONAL:
        return f"[{name}]"
    if action.nargs == argparse.ZERO_OR_MORE:
        return f"[{name} ...]"
    if action.nargs == argparse.ONE_OR_MORE:
        return f"{name} [{name} ...]"
    return name
