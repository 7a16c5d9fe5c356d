"""The one rule for names that become file names: a part, an image or a
bundle prefix taken from a manifest, a tar header or the user.

Later code opens ``<folder>/<name>``, so a name must never be able to leave
that folder, and it must be text a manifest can carry.
"""

from __future__ import annotations

import re

__all__ = ["NOT_XML_SAFE", "plain_name_problem", "show"]

# Characters an XML 1.0 document cannot carry unchanged in text: most C0
# controls are illegal, a carriage return is turned into a newline by every
# parser, and the rest are not characters at all.
NOT_XML_SAFE = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def show(value: object) -> str:
    """A short, one-line rendering of a value for an error message."""
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60]) + "..."
    return repr(value)


def plain_name_problem(label: str, value: object) -> str | None:
    """Why ``value`` is not a plain file name, or None. Later code opens
    ``<folder>/<name>``, so a name must never be able to leave that folder."""
    if not isinstance(value, str):
        return f"{label} must be a string, not {show(value)}"
    if value in ("", ".", ".."):
        return f"{label} {show(value)} is not a plain file name"
    if "/" in value or "\\" in value:
        return f"{label} {show(value)} is not a plain file name (it has a path separator)"
    if _CONTROL.search(value):
        return f"{label} {show(value)} is not a plain file name (it has a control character)"
    if NOT_XML_SAFE.search(value):
        return f"{label} {show(value)} has a character XML cannot carry"
    return None
