"""Questions, with one rule for all of them (``classic-cli.md`` §1.4).

* ``--batch`` answers every question without asking: "yes" to a
  confirmation, the shown default to a value question.
* Otherwise the question is written to stdout and the answer read from
  stdin, whether or not stdin is a terminal: ``echo n | ec2-upload-bundle …``
  stops, as it did with the classic tools, and a script that pipes "y"
  goes on.
* End of input is "no" (a value question keeps its default); an answer
  counts as yes only when it starts with ``y`` or ``Y``.
* Nobody answering within 30 seconds is :class:`PromptTimeout`.

A "no" raises :class:`DeclinedError`; the exit status for it is decided in
:mod:`amibundle.cli._errors`, like every other.
"""

from __future__ import annotations

import io
import select
import sys
from typing import TextIO

from amibundle.errors import DeclinedError, PromptTimeout

__all__ = ["TIMEOUT_SECONDS", "ask", "ask_value", "confirm", "read_answer"]

TIMEOUT_SECONDS = 30
DECLINED = "stopped: the question was answered no"


def read_answer(what: str) -> str | None:
    """One line of stdin (None at end of input), waiting at most
    :data:`TIMEOUT_SECONDS` when stdin is a real file, pipe or terminal."""
    try:
        fileno: int | None = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        fileno = None  # a test's StringIO: nothing to wait for
    if fileno is not None:
        ready, _, _ = select.select([fileno], [], [], TIMEOUT_SECONDS)
        if not ready:
            raise PromptTimeout(f"timed out waiting for input ({what})")
    line = sys.stdin.readline()
    return line or None


def _end_question_line(answer: str | None, out: TextIO) -> None:
    # A terminal echoed the user's Enter; an answer from a pipe, or the end of
    # input, did not end the question's line.
    if not (answer is not None and answer.endswith("\n") and _is_terminal(sys.stdin)):
        out.write("\n")
        out.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def ask(question: str, *, batch: bool, out: TextIO | None = None) -> bool:
    """``question [y/N]: `` on ``out`` (stdout); True only for an answer
    starting with y. ``batch``: True without asking."""
    if batch:
        return True
    out = out if out is not None else sys.stdout
    out.write(f"{question} [y/N]: ")
    out.flush()
    answer = read_answer(question)
    _end_question_line(answer, out)
    return (answer or "").strip().lower().startswith("y")


def confirm(warning: str, question: str, *, batch: bool) -> None:
    """Prints ``warning`` on stderr (also in batch mode), then asks
    ``question``; raises :class:`DeclinedError` unless the answer is yes."""
    print(warning, file=sys.stderr, flush=True)
    if not ask(question, batch=batch):
        raise DeclinedError(DECLINED)


def ask_value(question: str, default: str, *, batch: bool) -> str:
    """``question [default]: `` and the answer; the default for an empty
    answer, end of input, or batch mode."""
    if batch:
        return default
    sys.stdout.write(f"{question} [{default}]: ")
    sys.stdout.flush()
    answer = read_answer(question)
    _end_question_line(answer, sys.stdout)
    return (answer or "").strip() or default
