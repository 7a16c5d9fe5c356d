"""``amibundle unbundle`` / ``ec2-unbundle``: recreate the image of a local bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from amibundle.cli._common import command_parser, human_size, plural, print_json, rate_note
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_common_options,
    mandatory,
)
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._values import existing_dir, existing_file
from amibundle.unbundling import unbundle

__all__ = ["CLASSIC_LONGS", "build_parser", "run"]

DESCRIPTION = "Recreate the image file of a bundle, checking every part and the image digest."
MANUAL = f"""{DESCRIPTION}

Each part's SHA-1 is checked as it streams, the tar stream's digest at the end, and
with -c/--cert the manifest signature first. The image is written sparse under a
temporary name and renamed only when every check passed: after any failure or
Ctrl-C nothing is left behind. An existing image is only replaced with --force.

Example:
  ec2-unbundle -m out/root.img.manifest.xml -k pk.pem -s out -d restored
"""


# The classic tool's long options (classic-cli.md §1.3, §6.2).
CLASSIC_LONGS = (*CLASSIC_COMMON_LONGS, "--privatekey", "--manifest", "--source", "--destination")


def build_parser(style: Style, prog: str) -> OptionParser:
    classic = style is Style.CLASSIC
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    mandatory(
        parser,
        "-m",
        "--manifest",
        metavar="PATH",
        type=existing_file,
        help="the bundle's manifest file",
    )
    mandatory(
        parser,
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="your RSA private key (of the certificate the bundle was made for)",
    )
    parser.add_argument(
        "-s",
        "--source",
        metavar="DIR",
        type=existing_dir,
        default=Path() if classic else None,
        help="where the parts are (default: "
        + ("the current directory)" if classic else "the manifest's folder)"),
    )
    parser.add_argument(
        "-d",
        "--destination",
        metavar="DIR",
        type=parser.output_folder_type("destination"),
        default=Path(),
        help="where the image is written (default: the current directory)",
    )
    parser.add_argument(
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="check the manifest signature with this certificate first",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing image file")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_progress_option(parser)
    add_common_options(parser)
    if classic:
        parser.keep_classic_abbreviations(CLASSIC_LONGS)
    return parser


def run(args: argparse.Namespace, style: Style) -> int | None:
    with progress_for(args) as progress:
        result = unbundle(
            args.manifest,
            private_key=args.privatekey,
            source=args.source,
            destination=args.destination,
            cert=args.cert,
            force=args.force,
            progress=progress,
        )
    if args.json:
        print_json(result.to_dict())
    else:
        print(
            f"Unbundled {result.image_path} ({human_size(result.size)}, "
            f"{plural(result.parts, 'part')}, digest verified"
            f"{', signature verified' if result.signature_checked else ''}) "
            f"in {result.seconds:.1f} s"
            f"{rate_note(result.data_size, result.seconds, 'of image data')}"
        )
    return None
