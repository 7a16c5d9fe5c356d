"""The command line: ``amibundle <verb>`` and the classic ``ec2-*`` entry points.

Every command is a module with ``build_parser(style, prog)`` and
``run(args, style)``; the same module serves the modern verb and its classic
twin, which differ only in parsing rules, a few defaults and exit codes
(``_options``, ``_errors``). This package is the only code that prints or exits.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import logging
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn

from amibundle import __version__, interrupts
from amibundle.cli._common import version_text
from amibundle.cli._errors import EXIT_CODES, run_cli
from amibundle.cli._options import Style
from amibundle.files import made_folders

__all__ = [
    "CLASSIC_TOOLS",
    "COMMANDS",
    "classic_main",
    "command_module",
    "ec2_ami_tools_version",
    "ec2_bundle_and_upload_image",
    "ec2_bundle_image",
    "ec2_bundle_vol",
    "ec2_delete_bundle",
    "ec2_download_bundle",
    "ec2_migrate_bundle",
    "ec2_migrate_manifest",
    "ec2_unbundle",
    "ec2_upload_bundle",
    "entry",
    "exit_now",
    "main",
]

# Verbs and classic tools name their command module; only the one that runs is
# imported, so a command starts without loading every other one's dependencies.
COMMANDS: dict[str, str] = {
    "bundle-image": "bundle_image",
    "bundle-vol": "bundle_vol",
    "unbundle": "unbundle",
    "verify": "verify",
    "inspect": "inspect",
    "keygen": "keygen",
    "upload": "upload",
    "download": "download",
    "delete": "delete",
    "bundle-upload": "bundle_upload",
    "download-unbundle": "download_unbundle",
    "register": "register",
    "deregister": "deregister",
    "install": "install",
    "migrate-manifest": "migrate_manifest",
    "migrate-bundle": "migrate_bundle",
    "to-ebs": "to_ebs",
}
CLASSIC_TOOLS: dict[str, str] = {
    "ec2-bundle-image": "bundle_image",
    "ec2-bundle-vol": "bundle_vol",
    "ec2-unbundle": "unbundle",
    "ec2-upload-bundle": "upload",
    "ec2-download-bundle": "download",
    "ec2-delete-bundle": "delete",
    "ec2-bundle-and-upload-image": "bundle_upload",
    "ec2-migrate-manifest": "migrate_manifest",
    "ec2-migrate-bundle": "migrate_bundle",
}


def command_module(name: str) -> ModuleType:
    """The module of a command, by its module name in COMMANDS / CLASSIC_TOOLS."""
    return importlib.import_module(f"amibundle.cli.{name}")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        textwrap.fill(
            command_module(module).DESCRIPTION,
            79,
            initial_indent=f"  {verb:<{width}}  ",
            subsequent_indent=" " * (width + 4),
        )
        for verb, module in COMMANDS.items()
    ]
    return (
        "usage: amibundle <command> [options]   (amibundle <command> --help for its options)\n\n"
        "Make, ship and check EC2 instance-store AMI bundles.\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nThe classic entry points (ec2-bundle-image, ec2-unbundle, ...) accept the "
        "flags of Amazon's ec2-ami-tools.\n"
    )


@contextlib.contextmanager
def _logging_to_stderr(debug: bool) -> Iterator[None]:
    """Library warnings as ``warning: ...`` lines on stderr while the command
    runs; details with --debug. The logger is put back as it was afterwards,
    so a caller of :func:`main` (a test, a wrapper) keeps its own logging."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("amibundle")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The first SIGINT or SIGTERM unwinds like Ctrl-C, so every cleanup runs
    (temporary files, parts, objects in a bucket). Later ones are only noted:
    a second Ctrl-C must not cut the cleanup of the first short. During the
    few steps that must finish once begun, the interrupt waits for them."""
    if interrupts.defer():
        return
    for number in _STOP_SIGNALS:
        signal.signal(number, _already_stopping)
    raise KeyboardInterrupt


def _already_stopping(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("(already stopping: cleaning up)\n")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt_main_soon() -> None:
    time.sleep(0.01)
    # A real signal: it also wakes a main thread that waits in a system call.
    main = threading.main_thread().ident
    if main is not None:
        signal.pthread_kill(main, signal.SIGINT)


def _interrupt_again(unraisable: Any, previous: Callable[[Any], None]) -> None:
    """``sys.unraisablehook`` while a command runs. Python runs a signal
    handler between any two bytecodes, also inside a weakref callback or a
    ``__del__``, whose exceptions it only prints ("Exception ignored in");
    the interrupt would be lost there. So ours is armed and raised again, to
    strike in the code that runs next."""
    ours_fired = signal.getsignal(signal.SIGINT) is _already_stopping
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and ours_fired:
        for number in _STOP_SIGNALS:
            signal.signal(number, _interrupt)
        # From another thread, a moment later: tripped now, the handler would
        # run at this hook's next bytecode and be lost again.
        threading.Thread(target=_interrupt_main_soon, daemon=True).start()
        return
    previous(unraisable)


@contextlib.contextmanager
def _signal_handlers() -> Iterator[None]:
    """Ours while a command runs, unless an embedding program set its own;
    the previous ones are put back after (tests run commands in-process)."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {number: signal.getsignal(number) for number in defaults}
    ours = [number for number, default in defaults.items() if previous[number] is default]
    for number in ours:
        signal.signal(number, _interrupt)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_interrupt_again, previous=previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for number in ours:
            signal.signal(number, previous[number])


def _run_module(name: str, style: Style, prog: str, argv: Sequence[str]) -> int:
    with _signal_handlers():
        try:
            module = command_module(name)  # loads the command's dependencies: takes a moment
            parser = module.build_parser(style, prog)
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            return EXIT_CODES[style].interrupted

        def body(args: argparse.Namespace) -> int | None:
            with contextlib.ExitStack() as folders:
                folders.enter_context(_logging_to_stderr(args.debug))
                for dest in parser.folders_to_make:
                    if getattr(args, dest, None) is not None:
                        folders.enter_context(made_folders(getattr(args, dest)))
                status: int | None = module.run(args, style)
            return status

        return run_cli(parser, argv, body)


def exit_now(status: int) -> NoReturn:
    """Exits with ``status`` once the command has returned. Worker threads
    left waiting on the network (an S3 request after Ctrl-C) get a moment
    to end; the process does not wait longer for them, so a command always
    ends within about two seconds of being interrupted."""
    # The command is over: a signal now must not turn its status into a kill
    # (Python gives signals back their default action while it shuts down).
    for number in _STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    deadline = time.monotonic() + 1.5
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if any(thread.is_alive() and not thread.daemon for thread in others):
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """``amibundle <command> ...``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        sys.stdout.write(f"amibundle {__version__}\n")
        return 0
    module = COMMANDS.get(args[0])
    if module is None:
        sys.stderr.write(
            f"amibundle: error: unknown command {args[0]!r} (commands: {', '.join(COMMANDS)})\n"
            "Try 'amibundle --help'.\n"
        )
        return 2
    return _run_module(module, Style.MODERN, f"amibundle {args[0]}", args[1:])


def classic_main(tool: str, argv: Sequence[str] | None = None) -> int:
    """A classic ``ec2-*`` tool; returns the exit status."""
    return _run_module(
        CLASSIC_TOOLS[tool],
        Style.CLASSIC,
        tool,
        sys.argv[1:] if argv is None else argv,
    )


def entry() -> NoReturn:
    """The ``amibundle`` command."""
    exit_now(main())


def ec2_bundle_image() -> NoReturn:
    exit_now(classic_main("ec2-bundle-image"))


def ec2_bundle_vol() -> NoReturn:
    exit_now(classic_main("ec2-bundle-vol"))


def ec2_unbundle() -> NoReturn:
    exit_now(classic_main("ec2-unbundle"))


def ec2_upload_bundle() -> NoReturn:
    exit_now(classic_main("ec2-upload-bundle"))


def ec2_download_bundle() -> NoReturn:
    exit_now(classic_main("ec2-download-bundle"))


def ec2_delete_bundle() -> NoReturn:
    exit_now(classic_main("ec2-delete-bundle"))


def ec2_migrate_manifest() -> NoReturn:
    sys.exit(classic_main("ec2-migrate-manifest"))


def ec2_migrate_bundle() -> NoReturn:
    sys.exit(classic_main("ec2-migrate-bundle"))


def ec2_bundle_and_upload_image() -> NoReturn:
    exit_now(classic_main("ec2-bundle-and-upload-image"))


def ec2_ami_tools_version() -> NoReturn:
    """Prints the version and ignores every argument, as the classic does."""
    sys.stdout.write(version_text(None) + "\n")
    sys.exit(0)
