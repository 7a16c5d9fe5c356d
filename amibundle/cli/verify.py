"""``amibundle verify``: check a local bundle offline and report every problem."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from amibundle.checking import Problem, verify_bundle
from amibundle.cli._common import command_parser, plural, print_json
from amibundle.cli._options import OptionParser, Style, add_common_options, mandatory
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._values import existing_dir, existing_file
from amibundle.errors import shorten

__all__ = ["EXIT_PROBLEMS", "build_parser", "run"]

EXIT_PROBLEMS = 1
DESCRIPTION = "Check a bundle offline: manifest, signature, parts and, with -k, the whole stream."
MANUAL = f"""{DESCRIPTION}

Always checked: the manifest is well-formed, every part is present with a
consistent size and the right SHA-1, and bundled_size adds up. With -c/--cert the
manifest signature; with -k/--privatekey the bundle is decrypted, decompressed and
its tar stream read to the end, and the image digest compared; nothing is written.
Every problem is reported, not only the first. Exit status 0 only when all hold.

Example:
  amibundle verify -m out/root.img.manifest.xml -c cert.pem -k pk.pem
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    mandatory(
        parser,
        "-m",
        "--manifest",
        metavar="PATH",
        type=existing_file,
        help="the bundle's manifest file",
    )
    parser.add_argument(
        "-s",
        "--source",
        metavar="DIR",
        type=existing_dir,
        help="where the parts are (default: the manifest's folder)",
    )
    parser.add_argument(
        "-c",
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="check the manifest signature with this certificate",
    )
    parser.add_argument(
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="also decrypt and read the whole stream with this key",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_progress_option(parser)
    add_common_options(parser)
    return parser


SHOWN_PER_KIND = 20


def problem_lines(problems: Sequence[Problem]) -> list[str]:
    """``PROBLEM:`` lines, at most SHOWN_PER_KIND of each kind, then how many
    more there are (a manifest can list 100,000 missing parts)."""
    by_kind: dict[str, list[Problem]] = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    lines = []
    for kind, found in by_kind.items():
        lines += [f"PROBLEM: {shorten(problem, 1000)}" for problem in found[:SHOWN_PER_KIND]]
        if len(found) > SHOWN_PER_KIND:
            more = len(found) - SHOWN_PER_KIND
            lines.append(f"PROBLEM: ... and {more} more of this kind ({kind}); --json lists all")
    return lines


def run(args: argparse.Namespace, style: Style) -> int | None:
    with progress_for(args) as progress:
        report = verify_bundle(
            args.manifest,
            cert=args.cert,
            private_key=args.privatekey,
            source=args.source,
            progress=progress,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        if not args.quiet:
            print(
                f"Checked {args.manifest}: {', '.join(report.checks)} "
                f"({plural(report.parts, 'part')})"
            )
        for line in problem_lines(report.problems):
            print(line)
        print(
            "OK: the bundle is intact"
            if report.ok
            else f"FAILED: {plural(len(report.problems), 'problem')}"
        )
    return None if report.ok else EXIT_PROBLEMS
