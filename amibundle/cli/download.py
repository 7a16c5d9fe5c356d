"""``amibundle download`` / ``ec2-download-bundle``: fetch a bundle from S3 into a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from amibundle import s3
from amibundle.cli._common import (
    Announcements,
    command_parser,
    human_size,
    plural,
    print_json,
    rate_note,
)
from amibundle.cli._options import OptionParser, Style
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._s3options import (
    CLASSIC_COMMON_LONGS,
    add_s3_options,
    check_bundle_names,
    check_common,
    finish_s3_parser,
    note_sigv,
    settings_from,
)
from amibundle.cli._values import existing_file
from amibundle.errors import UsageError

__all__ = ["DEFAULT_PREFIX", "build_parser", "manifest_name", "run"]

DESCRIPTION = "Download a bundle (its manifest, then its parts) from S3 into a folder."
DEFAULT_PREFIX = "image"
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--bucket",
    "--access-key",
    "--secret-key",
    "--delegation-token",
    "--privatekey",
    "--url",
    "--region",
    "--sigv",
    "--manifest",
    "--prefix",
    "--directory",
    "--retry",
)
MANUAL = f"""{DESCRIPTION}

The manifest <prefix>.manifest.xml (or -m NAME) is fetched from the bucket's key
prefix and read first; then the parts it lists are fetched in parallel (--jobs).
Each part is checked against the manifest's size and SHA-1 as it arrives, written
under a temporary name and renamed only once it is verified; the manifest is put
in place last, so a folder holding the manifest holds the whole bundle. Parts
already in the folder with the right size and SHA-1 are not fetched again, so
running the command again after an interruption resumes it. File names come only
from the manifest's (checked) part names: nothing is written outside -d.

-k/--privatekey is accepted for compatibility: the classic tool needed it only for
encrypted manifests of before 2007, and it is not used.

Examples:
  ec2-download-bundle -b mybucket/images -p root.img -d restored/ -a AKIA... -s ...
  amibundle download -b mybucket/images -m root.img.manifest.xml -d restored/
  amibundle download -b test -p root.img -d restored/ --url http://127.0.0.1:8333
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog,
        style,
        description=DESCRIPTION,
        manual=MANUAL,
        usage="%(prog)s -b BUCKET[/PREFIX] [-p NAME | -m NAME] [options]",
    )
    add_s3_options(parser)
    parser.add_argument(
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="accepted for compatibility and not used (the classic tool needed it only "
        "for encrypted manifests of before 2007)",
    )
    parser.add_argument(
        "-p",
        "--prefix",
        metavar="NAME",
        help=f"the bundle's name: fetches NAME.manifest.xml (default: {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "-m",
        "--manifest",
        metavar="NAME",
        help="the manifest's name in the bucket (a name, not a path; not with -p)",
    )
    parser.add_argument(
        "-d",
        "--directory",
        metavar="DIR",
        type=parser.output_folder_type("directory"),
        default=Path(),
        help="where the bundle is written (default: the current directory)",
    )
    if style is Style.MODERN:
        from amibundle.cli.download_unbundle import add_unbundle_outputs

        parser.add_argument(
            "--unbundle",
            action="store_true",
            help="unbundle while downloading (as download-unbundle): the image, not the "
            "bundle, is written to -d, -o - or --to-device; needs -k",
        )
        add_unbundle_outputs(parser, directory=False)
    add_progress_option(parser)
    return finish_s3_parser(parser, style, CLASSIC_LONGS, _check)


def _check(args: argparse.Namespace) -> None:
    """Classic order: access key, secret key, bucket, --sigv, (private key), -p/-m."""
    check_common(args)
    check_bundle_names(args)
    if getattr(args, "unbundle", False):
        from amibundle.cli.download_unbundle import check_output

        if args.privatekey is None:
            raise UsageError("--unbundle needs --privatekey (it unwraps the bundle key)")
        check_output(args)
    elif getattr(args, "output", None) is not None or getattr(args, "to_device", None):
        raise UsageError("--output and --to-device need --unbundle")


def manifest_name(args: argparse.Namespace) -> str:
    """``-m NAME``, else ``<-p or "image">.manifest.xml``."""
    if args.manifest is not None:
        return str(args.manifest)
    return f"{args.prefix if args.prefix is not None else DEFAULT_PREFIX}.manifest.xml"


def report(result: s3.DownloadResult, *, json_output: bool) -> None:
    if json_output:
        print_json(result.to_dict())
        return
    print(
        f"Download complete: {plural(result.parts_downloaded, 'part')} downloaded, "
        f"{result.parts_skipped} already there, {human_size(result.bytes_downloaded)} in "
        f"{result.seconds:.1f} s{rate_note(result.bytes_downloaded, result.seconds)}; "
        f"manifest {result.manifest_path}"
    )


def run(args: argparse.Namespace, style: Style) -> int | None:
    bucket: s3.BucketRef = args.bucket_ref
    name = manifest_name(args)
    if getattr(args, "unbundle", False):
        from amibundle.cli.download_unbundle import unbundle_from_s3

        unbundle_from_s3(args, bucket, name)
        return None
    # Printed once the manifest has been fetched and read.
    notes = Announcements.of(args)
    note_sigv(args, notes)
    if not args.json:
        notes.add(f"Downloading {bucket.url(bucket.key(name))} into {args.directory} ...")
    with progress_for(args) as bars:
        progress = notes.progress(bars)
        result = s3.download_bundle(
            bucket,
            settings=settings_from(args),
            manifest_name=name,
            directory=args.directory,
            progress=progress,
        )
    report(result, json_output=args.json)
    return None
