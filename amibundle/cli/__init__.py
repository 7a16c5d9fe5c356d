"""The command line: ``amibundle <verb>`` and the classic ``ec2-*`` entry points.

Every command is a module with ``build_parser(style, prog)`` and
``run(args, style)``; the same module serves the modern verb and its classic
twin, which differ only in parsing rules, a few defaults and exit codes
(``_options``, ``_errors``). This package is the only code that prints or exits.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import textwrap
from collections.abc import Sequence
from types import FrameType, ModuleType
from typing import NoReturn

from amibundle import __version__
from amibundle.cli._common import version_text
from amibundle.cli._errors import run_cli
from amibundle.cli._options import Style

__all__ = [
    "CLASSIC_TOOLS",
    "COMMANDS",
    "classic_main",
    "command_module",
    "ec2_ami_tools_version",
    "ec2_bundle_image",
    "ec2_bundle_vol",
    "ec2_delete_bundle",
    "ec2_download_bundle",
    "ec2_migrate_bundle",
    "ec2_migrate_manifest",
    "ec2_unbundle",
    "ec2_upload_bundle",
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
    "migrate-manifest": "migrate_manifest",
    "migrate-bundle": "migrate_bundle",
}
CLASSIC_TOOLS: dict[str, str] = {
    "ec2-bundle-image": "bundle_image",
    "ec2-bundle-vol": "bundle_vol",
    "ec2-unbundle": "unbundle",
    "ec2-upload-bundle": "upload",
    "ec2-download-bundle": "download",
    "ec2-delete-bundle": "delete",
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


def _setup_logging(debug: bool) -> None:
    """Library warnings as ``warning: ...`` lines on stderr; details with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("amibundle")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    # SIGTERM unwinds like Ctrl-C, so every cleanup (temporary files) runs.
    raise KeyboardInterrupt


def _run_module(module: ModuleType, style: Style, prog: str, argv: Sequence[str]) -> int:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    parser = module.build_parser(style, prog)

    def body(args: argparse.Namespace) -> int | None:
        _setup_logging(args.debug)
        status: int | None = module.run(args, style)
        return status

    return run_cli(parser, argv, body)


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
    return _run_module(command_module(module), Style.MODERN, f"amibundle {args[0]}", args[1:])


def classic_main(tool: str, argv: Sequence[str] | None = None) -> int:
    """A classic ``ec2-*`` tool; returns the exit status."""
    return _run_module(
        command_module(CLASSIC_TOOLS[tool]),
        Style.CLASSIC,
        tool,
        sys.argv[1:] if argv is None else argv,
    )


def ec2_bundle_image() -> NoReturn:
    sys.exit(classic_main("ec2-bundle-image"))


def ec2_bundle_vol() -> NoReturn:
    sys.exit(classic_main("ec2-bundle-vol"))


def ec2_unbundle() -> NoReturn:
    sys.exit(classic_main("ec2-unbundle"))


def ec2_upload_bundle() -> NoReturn:
    sys.exit(classic_main("ec2-upload-bundle"))


def ec2_download_bundle() -> NoReturn:
    sys.exit(classic_main("ec2-download-bundle"))


def ec2_delete_bundle() -> NoReturn:
    sys.exit(classic_main("ec2-delete-bundle"))


def ec2_migrate_manifest() -> NoReturn:
    sys.exit(classic_main("ec2-migrate-manifest"))


def ec2_migrate_bundle() -> NoReturn:
    sys.exit(classic_main("ec2-migrate-bundle"))


def ec2_ami_tools_version() -> NoReturn:
    """Prints the version and ignores every argument, as the classic does."""
    sys.stdout.write(version_text(None) + "\n")
    sys.exit(0)
