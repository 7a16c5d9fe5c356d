"""Interactive questions, with the classic rules: answers come from stdin,
time out after 30 seconds, and ``--batch`` takes the default without asking.

Only asked when stdin is a terminal: a job with no terminal gets the default,
as ``--batch`` would give it.
"""

from __future__ import annotations

import select
import sys

from amibundle.errors import DeclinedError, PromptTimeout

__all__ = ["TIMEOUT_SECONDS", "ask_value", "confirm", "interactive"]

TIMEOUT_SECONDS = 30


def interactive(batch: bool) -> bool:
    return not batch and sys.stdin.isatty()


def _read_answer(what: str) -> str:
    ready, _, _ = select.select([sys.stdin], [], [], TIMEOUT_SECONDS)
    if not ready:
        raise PromptTimeout(f"timed out waiting for input ({what})")
    return sys.stdin.readline()


def ask_value(question: str, default: str, *, batch: bool) -> str:
    """Shows ``question [default]:`` and returns the answer, or the default
    for an empty answer, end of input, or batch mode."""
    if not interactive(batch):
        return default
    print(f"{question} [{default}]: ", end="", flush=True)
    answer = _read_answer(question).strip()
    return answer or default


def confirm(warning: str, question: str, *, batch: bool) -> None:
    """Prints ``warning`` on stderr and asks to continue; raises
    :class:`DeclinedError` unless the answer starts with y (batch: yes)."""
    print(warning, file=sys.stderr)
    if not interactive(batch):
        return
    print(f"{question} [y/N]: ", end="", flush=True)
    if not _read_answer(question).strip().lower().startswith("y"):
        raise DeclinedError("stopped: the question was answered no")
