"""``amibundle download-unbundle``: a bundle in S3 back into its image, in one
pass, with nothing bundle-sized stored (also ``amibundle download --unbundle``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from amibundle import s3
from amibundle.cli._common import (
    Announcements,
    command_parser,
    human_size,
    plural,
    print_json,
    rate_note,
)
from amibundle.cli._options import OptionParser, Style, exclusive
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._s3options import (
    add_s3_options,
    check_bundle_names,
    check_common,
    finish_s3_parser,
    note_sigv,
    settings_from,
)
from amibundle.cli._values import existing_file
from amibundle.cli.download import manifest_name
from amibundle.errors import UsageError

if TYPE_CHECKING:  # download --unbundle's parser loads this module: no compressors for it
    from amibundle.downloading import DownloadUnbundleResult

__all__ = ["build_parser", "report", "run", "unbundle_from_s3"]

# Parts fetched ahead at most: more would only hold memory, as one part
# downloads faster than the engine inflates it.
PREFETCH = 4

DESCRIPTION = (
    "Download a bundle from S3 and unbundle it in one pass: into an image file, to "
    "standard output, or onto a block device."
)
MANUAL = f"""{DESCRIPTION}

The manifest (-p NAME for NAME.manifest.xml, or -m NAME) is fetched and checked
first (its signature with --cert; -k must unwrap its key). Then the parts are
fetched in order, --jobs (at most 4) ahead, each checked against the manifest's size
and SHA-1 before any of it is used, decrypted, inflated and written; the bundle is
never stored. The image goes to:

  -d DIR              a new file named as in the manifest, sparse, under a temporary
                      name until every check passed (as unbundle does; default: .)
  -o -                standard output, holes as zeros: | dd of=..., | qemu-img dd
  --to-device DEV     an existing block device (an EBS volume attached to this
                      instance, to make a volume from the image) or file: every block
                      of the image is written, holes as zeros; a file is cut to the
                      image's size, a larger device keeps what lies beyond

A stream or a device cannot be taken back: a failure part way exits non-zero and
says up to which offset the image was written.

Examples:
  amibundle download-unbundle -b mybucket/images -p root.img -k pk.pem -d restored/
  amibundle download-unbundle -b mybucket/images -p root.img -k pk.pem -o - | cmp - root.img
  sudo amibundle download-unbundle -b mybucket/images -p root.img -k pk.pem --to-device /dev/xvdf
"""


def add_unbundle_outputs(parser: OptionParser, *, directory: bool) -> None:
    """-o and --to-device (and -d unless the command has it already), --cert, --force."""
    if directory:
        parser.add_argument(
            "-d",
            "--directory",
            metavar="DIR",
            type=parser.output_folder_type("directory"),
            help="write the image file into DIR (default: the current folder)",
        )
    parser.add_argument(
        "-o", "--output", metavar="-", help="'-': write the image to standard output"
    )
    parser.add_argument(
        "--to-device",
        metavar="DEV",
        type=Path,
        help="write the image over an existing block device or file",
    )
    parser.add_argument(
        "--cert", metavar="PATH", type=existing_file, help="check the manifest's signature first"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing image file in -d")
    parser.param_dests.update(
        {"destination": "directory", "device": "to_device", "stream": "output"}
    )


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog,
        style,
        description=DESCRIPTION,
        manual=MANUAL,
        usage="%(prog)s -b BUCKET[/PREFIX] [-p NAME | -m NAME] -k PATH "
        "[-d DIR | -o - | --to-device DEV] [options]",
    )
    add_s3_options(parser, bucket_region=True)
    parser.mandatory_group.add_argument(
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="your PEM RSA private key: unwraps the bundle key",
    )
    parser.add_argument(
        "-p",
        "--prefix",
        metavar="NAME",
        help="the bundle's name: NAME.manifest.xml (default: image)",
    )
    parser.add_argument(
        "-m", "--manifest", metavar="NAME", help="the manifest's name in the bucket (not with -p)"
    )
    add_unbundle_outputs(parser, directory=True)
    add_progress_option(parser)
    parser = finish_s3_parser(parser, style, (), _check)
    exclusive(parser, "--directory", "--output", "--to-device")
    return parser


def _check(args: argparse.Namespace) -> None:
    check_common(args)
    check_bundle_names(args)
    if args.privatekey is None:
        raise UsageError("missing mandatory option --privatekey")
    check_output(args)


def check_output(args: argparse.Namespace) -> None:
    if args.output is not None and args.output != "-":
        raise UsageError(
            f"invalid value for --output: {args.output!r}: only '-' (standard output); "
            "use --directory for a file"
        )


def report(result: DownloadUnbundleResult, *, json_output: bool, out: TextIO) -> None:
    if json_output:
        with contextlib.redirect_stdout(out):
            print_json(result.to_dict())
        return
    where = "standard output" if result.output_kind == "stream" else result.output
    print(
        f"Unbundled {human_size(result.size)} image to {where} from "
        f"{plural(result.parts, 'part')} ({human_size(result.bytes_downloaded)} downloaded) "
        f"in {result.seconds:.1f} s{rate_note(result.size, result.seconds)}",
        file=out,
    )


@contextlib.contextmanager
def _stdout_stream(args: argparse.Namespace) -> Iterator[BinaryIO | None]:
    """Standard output's binary stream for -o -, refused on a terminal."""
    if args.output != "-":
        yield None
        return
    if sys.stdout.isatty():
        raise UsageError("--output - writes the image to standard output, which is a terminal")
    yield sys.stdout.buffer


def unbundle_from_s3(args: argparse.Namespace, bucket: s3.BucketRef, name: str) -> None:
    """The common run of download-unbundle and download --unbundle."""
    from amibundle.downloading import download_unbundle

    to_stdout = args.output == "-"
    # With the image on standard output, everything else goes to stderr.
    out = sys.stderr if to_stdout else sys.stdout
    target = args.to_device or ("standard output" if to_stdout else args.directory or Path())
    # Printed once the library has checked its inputs and starts working.
    notes = Announcements.of(args)
    note_sigv(args, notes)
    if not args.json:
        notes.add(f"Unbundling {bucket.url(bucket.key(name))} to {target} ...", stderr=to_stdout)
    with _stdout_stream(args) as stream, progress_for(args) as bars:
        result = download_unbundle(
            bucket,
            settings=settings_from(args),
            manifest_name=name,
            private_key=args.privatekey,
            destination=None if (to_stdout or args.to_device) else (args.directory or Path()),
            device=args.to_device,
            stream=stream,
            cert=args.cert,
            force=args.force,
            prefetch=min(args.jobs, PREFETCH),
            progress=notes.progress(bars),
        )
    report(result, json_output=args.json, out=out)


def run(args: argparse.Namespace, style: Style) -> int | None:
    unbundle_from_s3(args, args.bucket_ref, manifest_name(args))
    return None
