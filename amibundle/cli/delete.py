"""``amibundle delete`` / ``ec2-delete-bundle``: remove a bundle's objects from S3."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from amibundle import s3
from amibundle.cli import _prompt
from amibundle.cli._common import command_parser, plural, print_json
from amibundle.cli._errors import exit_code_for
from amibundle.cli._options import OptionParser, Style
from amibundle.cli._s3options import (
    CLASSIC_COMMON_LONGS,
    add_s3_options,
    bundle_file_name,
    check_common,
    check_manifest_or_prefix,
    finish_s3_parser,
    note_sigv,
    settings_from,
)
from amibundle.cli._values import existing_file
from amibundle.errors import DeclinedError, UsageError

__all__ = ["ask_before_deleting", "build_parser", "run"]

NOTHING_DELETED = "nothing deleted: the question was not answered yes"
DESCRIPTION = "Delete a bundle from S3: its manifest first, then exactly the parts it lists."
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--bucket",
    "--access-key",
    "--secret-key",
    "--delegation-token",
    "--url",
    "--region",
    "--sigv",
    "--manifest",
    "--prefix",
    "--clear",
    "--retry",
    "--yes",
)
MANUAL = f"""{DESCRIPTION}

The keys come from a local manifest (-m PATH) or from the bundle's manifest in the
bucket (-p NAME reads NAME.manifest.xml): only the manifest and the parts it lists
are deleted, never anything else under the prefix. The manifest goes first, so
nobody can register a half-deleted bundle. The keys are listed and you are asked
to confirm unless -y or --batch is given; answering anything but yes, or end of
input, deletes nothing and exits with status 8. --clear then removes the bucket,
only if nothing else is left in it.

Examples:
  ec2-delete-bundle -b mybucket/images -p root.img -a AKIA... -s ... -y
  amibundle delete -b mybucket/images -m out/root.img.manifest.xml
  amibundle delete -b test -p root.img --clear --batch --url http://127.0.0.1:8333
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog,
        style,
        description=DESCRIPTION,
        manual=MANUAL,
        usage="%(prog)s -b BUCKET[/PREFIX] (-m PATH | -p NAME) [options]",
    )
    add_s3_options(parser)
    parser.mandatory_group.add_argument(
        "-m",
        "--manifest",
        metavar="PATH",
        type=existing_file,
        help="a local copy of the bundle's manifest, naming the keys (or -p)",
    )
    parser.mandatory_group.add_argument(
        "-p",
        "--prefix",
        metavar="NAME",
        help="the bundle's name: its manifest NAME.manifest.xml in the bucket names "
        "the keys (or -m)",
    )
    parser.add_argument(
        "--clear", action="store_true", help="then delete the bucket, if nothing is left in it"
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask before deleting (--batch does the same)",
    )
    return finish_s3_parser(parser, style, CLASSIC_LONGS, _check)


def _check(args: argparse.Namespace) -> None:
    """Classic order: access key, secret key, bucket, --sigv, then exactly one of -m/-p."""
    check_common(args)
    check_manifest_or_prefix(args)
    if args.manifest is None and args.prefix is None:
        raise UsageError("missing mandatory option: give one of --manifest or --prefix")
    if args.prefix is not None:
        bundle_file_name("--prefix", args.prefix)


def ask_before_deleting(
    bucket: s3.BucketRef, *, ask: bool, out: TextIO
) -> Callable[[list[str]], bool]:
    """The ``confirm`` callback for :func:`amibundle.s3.delete_bundle`.

    Lists the keys; unless ``ask`` is False, asks "continue? [y/N]" with the
    one rule of :mod:`amibundle.cli._prompt` (the answer is read from stdin,
    terminal or not; end of input is no). Anything but yes raises
    :class:`DeclinedError` from inside the library call, before anything is
    deleted and so before ``--clear``.
    """

    def confirm(keys: list[str]) -> bool:
        out.write(f"To delete from bucket {bucket.bucket}:\n")
        out.writelines(f"  {key}\n" for key in keys)
        out.flush()
        if ask and not _prompt.ask("continue?", batch=False, out=out):
            raise DeclinedError(NOTHING_DELETED)
        return True

    return confirm


def report(result: s3.DeleteResult, bucket: s3.BucketRef, *, json_output: bool) -> None:
    if json_output:
        print_json(result.to_dict())
        return
    print(f"Deleted {plural(len(result.deleted), 'object')} from {bucket.url()}")
    if result.bucket_removed:
        print(f"Removed bucket {bucket.bucket}")


def run(args: argparse.Namespace, style: Style) -> int | None:
    note_sigv(args)
    bucket: s3.BucketRef = args.bucket_ref
    # With --json, stdout is for the JSON document only: list and question go to stderr.
    out = sys.stderr if args.json else sys.stdout
    try:
        result = s3.delete_bundle(
            bucket,
            settings=settings_from(args),
            manifest=args.manifest,
            prefix=args.prefix,
            clear=args.clear,
            confirm=ask_before_deleting(bucket, ask=not (args.yes or args.batch), out=out),
        )
        if result.declined:  # our callback raises instead; kept for a library that returns
            raise DeclinedError(NOTHING_DELETED)
    except DeclinedError as declined:
        # A "no" is an answer, not an error: one line, and the status that says
        # so (decided with every other status in _errors).
        print(str(declined), file=sys.stderr)
        return exit_code_for(declined, style)
    report(result, bucket, json_output=args.json)
    return None
