"""Turning what a command raised into a message on stderr and an exit status.

The library raises and never exits; this module is the one place that maps
exceptions to exit codes, for both command families:

============================  ======  =======
outcome                       modern  classic
============================  ======  =======
success, --help, --version    0       0
UsageError                    2       1
other AmibundleError          1       254 (or the error's ``classic_exit``)
Ctrl-C                        130     255
unexpected exception          1       1
============================  ======  =======

The classic codes are those of ``classic-cli.md`` §1.6. An error class that
needs a specific classic status (3 for S3, 10, 12, …) says so with a
``classic_exit`` class attribute, and one that needs the same status in both
families with ``exit_code`` (8 for a declined question); they are read with
``getattr`` so :mod:`amibundle.errors` need not know about the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from amibundle.cli._options import USAGE_PROG_ATTR, EarlyExit, OptionParser, Style, parse_args
from amibundle.errors import AmibundleError, UsageError

__all__ = [
    "CLASSIC_EXIT",
    "EXIT_CODES",
    "MODERN_EXIT",
    "ExitCodes",
    "exit_code_for",
    "run_cli",
    "run_command",
]


@dataclass(frozen=True)
class ExitCodes:
    """The exit status of each kind of outcome, for one command family."""

    success: int
    usage: int
    failure: int
    interrupted: int
    internal: int


MODERN_EXIT = ExitCodes(success=0, usage=2, failure=1, interrupted=130, internal=1)
CLASSIC_EXIT = ExitCodes(success=0, usage=1, failure=254, interrupted=255, internal=1)
EXIT_CODES: Mapping[Style, ExitCodes] = {Style.MODERN: MODERN_EXIT, Style.CLASSIC: CLASSIC_EXIT}


def exit_code_for(error: BaseException, style: Style) -> int:
    """The exit status for ``error`` raised by a command of ``style``."""
    codes = EXIT_CODES[style]
    if isinstance(error, KeyboardInterrupt):
        return codes.interrupted
    if not isinstance(error, AmibundleError):
        return codes.internal
    # An error may fix its status for both families (``exit_code``) or for
    # the classic tools only (``classic_exit``, from classic-cli.md).
    explicit = getattr(error, "exit_code", None)
    if style is Style.CLASSIC:
        explicit = getattr(error, "classic_exit", explicit)
    if isinstance(explicit, int):
        return explicit
    return codes.usage if isinstance(error, UsageError) else codes.failure


def run_command(func: Callable[[], int | None], *, prog: str, style: Style, debug: bool) -> int:
    """Call ``func`` and return the process exit status; print errors to stderr.

    ``func`` returns its own status (None means success). Deliberate errors get
    one ``ERROR:`` line (modern: ``<prog>: error:``), a ``hint:`` line when the
    error has a hint, and, for usage errors, a line pointing at ``--help``;
    never a traceback. Unexpected exceptions are reported as internal errors,
    with the traceback only when ``debug`` is set.
    """
    return _run(func, prog=prog, style=style, is_debug=lambda: debug)


def run_cli(
    parser: OptionParser,
    argv: Sequence[str] | None,
    body: Callable[[argparse.Namespace], int | None],
) -> int:
    """Parse ``argv`` with :func:`parse_args`, then run ``body(namespace)``; return the status.

    Parse errors and ``--help``/``--version``/``--manual`` are handled like any
    other outcome; ``--debug`` takes effect as soon as it has been parsed.
    """
    parsed: list[argparse.Namespace] = []

    def parse_then_run() -> int | None:
        parsed.append(parse_args(parser, argv))
        return body(parsed[0])

    def is_debug() -> bool:
        return bool(parsed and getattr(parsed[0], "debug", False))

    return _run(parse_then_run, prog=parser.prog, style=parser.style, is_debug=is_debug)


def _run(
    func: Callable[[], int | None], *, prog: str, style: Style, is_debug: Callable[[], bool]
) -> int:
    codes = EXIT_CODES[style]
    try:
        status = func()
    except EarlyExit as request:
        _write(sys.stdout, request.text)
        return codes.success
    except KeyboardInterrupt as interrupt:
        _flush_stdout()
        _write(sys.stderr, f"{prog}: interrupted")
        return exit_code_for(interrupt, style)
    except SystemExit as exiting:
        return _system_exit_status(exiting)
    except AmibundleError as error:
        _flush_stdout()
        _report(error, prog=prog, style=style)
        return exit_code_for(error, style)
    except Exception as error:
        _flush_stdout()
        debug = is_debug()
        if debug:
            traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
        message = _internal_message(error, debug=debug)
        _write(sys.stderr, f"ERROR: {message}" if style is Style.CLASSIC else f"{prog}: {message}")
        return exit_code_for(error, style)
    return codes.success if status is None else status


def _report(error: AmibundleError, *, prog: str, style: Style) -> None:
    lines = [_error_line(_one_line(str(error)), prog, style)]
    if error.hint:
        lines.append(f"hint: {_one_line(error.hint)}")
    if isinstance(error, UsageError):
        usage_prog = getattr(error, USAGE_PROG_ATTR, None)
        lines.append(f"Try '{usage_prog if isinstance(usage_prog, str) else prog} --help'.")
    _write(sys.stderr, "\n".join(lines))


def _error_line(message: str, prog: str, style: Style) -> str:
    # The classic tools print "ERROR: <message>"; scripts may grep for it.
    return f"ERROR: {message}" if style is Style.CLASSIC else f"{prog}: error: {message}"


def _internal_message(error: Exception, *, debug: bool) -> str:
    detail = _one_line(str(error))
    text = f"internal error: {type(error).__name__}" + (f": {detail}" if detail else "")
    return text if debug else f"{text} (rerun with --debug for a traceback)"


def _system_exit_status(exiting: SystemExit) -> int:
    """Honour a sys.exit() from inside a command as argparse-free code may use it."""
    code = exiting.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    _write(sys.stderr, _one_line(str(code)))
    return 1


def _one_line(text: str) -> str:
    """Messages are one line by contract; fold any stray newlines so output stays so."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _write(stream: TextIO, text: str) -> None:
    stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


def _flush_stdout() -> None:
    # Progress lines on stdout should come out before the error on stderr.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
