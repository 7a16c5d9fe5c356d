"""The runnable examples of a Markdown file: fenced ``sh`` and ``python`` blocks.

Every block fenced as ```` ```sh ```` (or ``bash``, ``shell``) or
```` ```python ```` (or ``py``) is an example that must run. A block that
cannot run on a test machine says why in an HTML comment on the line before
its fence (blank lines between are allowed)::

    <!-- not run: needs root on an EC2 instance -->
    ```sh
    sudo ec2-bundle-vol ...
    ```

A ``not run`` comment without a reason, or one that is not followed by a
runnable block, is an error: skipping must stay rare and explained. Blocks
of any other language (``text``, ``json``, none) are not examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Block", "ReadmeError", "examples"]

LANGUAGES = {"sh": "sh", "bash": "sh", "shell": "sh", "python": "python", "py": "python"}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_NOT_RUN = re.compile(r"^\s*<!--\s*not run:(?P<reason>.*?)-->\s*$")


class ReadmeError(Exception):
    """The Markdown breaks the rules above (said with its line number)."""


@dataclass(frozen=True)
class Block:
    language: str  # "sh" or "python"
    code: str
    line: int  # of the opening fence, 1-based
    skip: str | None  # the reason it is not run, or None

    @property
    def id(self) -> str:
        return f"line{self.line}-{self.language}"


def examples(markdown: str) -> list[Block]:
    """The runnable blocks of ``markdown``, in order."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # a "not run" comment waiting for its block
    index = 0
    while index < len(lines):
        line = lines[index]
        comment = _NOT_RUN.match(line)
        fence = _FENCE.match(line)
        if comment:
            reason = comment.group("reason").strip()
            if not reason:
                raise ReadmeError(f"line {index + 1}: 'not run' needs a reason")
            _check_unused(pending)
            pending = (index + 1, reason)
        elif fence:
            info = fence.group("info").strip().split()
            language = LANGUAGES.get(info[0].lower()) if info else None
            end = _closing(lines, index, fence.group("fence"))
            body = [_dedent(text, len(fence.group("indent"))) for text in lines[index + 1 : end]]
            if language is not None:
                skip = pending[1] if pending else None
                blocks.append(Block(language, "\n".join(body) + "\n", index + 1, skip))
                pending = None
            else:
                _check_unused(pending)
            index = end
        elif line.strip():
            _check_unused(pending)
        index += 1
    _check_unused(pending)
    return blocks


def _closing(lines: list[str], start: int, fence: str) -> int:
    """The line index of the fence that closes the one at ``start``."""
    for index in range(start + 1, len(lines)):
        text = lines[index].strip()
        if text.startswith(fence[0] * len(fence)) and set(text) == {fence[0]}:
            return index
    raise ReadmeError(f"line {start + 1}: a fenced block is never closed")


def _dedent(text: str, indent: int) -> str:
    removable = len(text) - len(text.lstrip(" "))
    return text[min(indent, removable) :]


def _check_unused(pending: tuple[int, str] | None) -> None:
    if pending is not None:
        raise ReadmeError(
            f"line {pending[0]}: a 'not run' comment must come right before an sh or python block"
        )
