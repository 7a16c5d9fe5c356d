"""Turning what a command raised into a message on stderr and an exit status.

The library raises and never exits; this module is the one place that maps
exceptions to exit codes, for both command families:

============================  ======  =======
outcome                       modern  classic
============================  ======  =======
success, --help, --version    0       0
UsageError                    2       1
a question answered no        8       8
other AmibundleError          1       254 (or the class's code below)
Ctrl-C                        130     255
unexpected exception          1       1
============================  ======  =======

The classic codes of ``classic-cli.md`` §1.6 that depend on the error are
in :data:`CLASSIC_CODES`: 3 for S3 (and for a part an upload cannot read,
which the classic reported as a failed upload), 10 for a bucket elsewhere,
12 for metadata asked for and unreachable, 5 for a question nobody
answered, 2 for migrate-manifest's backup in the way, 6 for an id that
cannot be mapped and 7 for a mapping EC2 cannot be asked for. The modern
family keeps its three codes for all of these (1; 2 for usage; 8 for
"no"): a script tells them apart by the message, and ``1`` stays "the
command failed". Only a :class:`UsageError` gets the "Try --help" line, so
an image that is too large or empty (:class:`ImageSizeError`) is 254 /
1 without it, as the classic reported it.
Messages name options as the command spells them: an error about the
library parameter ``user`` reads ``--user`` here (see
:meth:`amibundle.errors.AmibundleError.render`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from amibundle.cli._options import EarlyExit, OptionParser, Style, parse_args
from amibundle.errors import (
    AmibundleError,
    BackupExistsError,
    DeclinedError,
    LocationMismatchError,
    MappingError,
    MappingUnavailableError,
    MetadataUnavailable,
    PromptTimeout,
    S3Error,
    Spelling,
    UploadSourceError,
    UsageError,
)

__all__ = [
    "CLASSIC_CODES",
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

# Error classes with a status of their own, most specific first.
CLASSIC_CODES: tuple[tuple[type[AmibundleError], int], ...] = (
    (LocationMismatchError, 10),
    (S3Error, 3),
    (UploadSourceError, 3),
    (MetadataUnavailable, 12),
    (PromptTimeout, 5),
    (BackupExistsError, 2),
    (MappingError, 6),
    (MappingUnavailableError, 7),
)
BOTH_CODES: tuple[tuple[type[AmibundleError], int], ...] = ((DeclinedError, 8),)


def exit_code_for(error: BaseException, style: Style) -> int:
    """The exit status for ``error`` raised by a command of ``style``."""
    codes = EXIT_CODES[style]
    if isinstance(error, KeyboardInterrupt):
        return codes.interrupted
    if not isinstance(error, AmibundleError):
        return codes.internal
    table = (*BOTH_CODES, *CLASSIC_CODES) if style is Style.CLASSIC else BOTH_CODES
    for kind, code in table:
        if isinstance(error, kind):
            return code
    return codes.usage if isinstance(error, UsageError) else codes.failure


def run_command(func: Callable[[], int | None], *, prog: str, style: Style, debug: bool) -> int:
    """Call ``func`` and return the process exit status; print errors to stderr.

    ``func`` returns its own status (None means success). Deliberate errors get
    one ``ERROR:`` line (modern: ``<prog>: error:``), a ``hint:`` line when the
    error has a hint, and, for usage errors, a line pointing at ``--help``;
    never a traceback. Unexpected exceptions are reported as internal errors,
    with the traceback only when ``debug`` is set.
    """
    return _run(func, prog=prog, style=style, is_debug=lambda: debug, spell=_default_spelling)


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

    return _run(
        parse_then_run,
        prog=parser.prog,
        style=parser.style,
        is_debug=is_debug,
        spell=parser.flag_for,
    )


def _default_spelling(param: str, off: bool) -> str:
    return "--" + ("no-" if off else "") + param.replace("_", "-")


def _run(
    func: Callable[[], int | None],
    *,
    prog: str,
    style: Style,
    is_debug: Callable[[], bool],
    spell: Spelling,
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
        _report(error, prog=prog, style=style, spell=spell)
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


def _report(error: AmibundleError, *, prog: str, style: Style, spell: Spelling) -> None:
    lines = [_error_line(_one_line(error.render(spell)), prog, style)]
    hint = error.render_hint(spell)
    if hint:
        lines.append(f"hint: {_one_line(hint)}")
    if isinstance(error, UsageError):
        lines.append(f"Try '{prog} --help'.")
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
