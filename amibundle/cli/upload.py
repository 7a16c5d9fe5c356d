"""``amibundle upload`` / ``ec2-upload-bundle``: put a local bundle into an S3 bucket."""

from __future__ import annotations

import argparse
import re
from typing import Protocol

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
from amibundle.cli._prompt import confirm
from amibundle.cli._s3options import (
    CLASSIC_COMMON_LONGS,
    add_s3_options,
    check_common,
    finish_s3_parser,
    is_v2_safe,
    note_sigv,
    settings_from,
)
from amibundle.cli._values import existing_dir, existing_file, integer
from amibundle.errors import UsageError

__all__ = [
    "ACLS",
    "CLASSIC_LOCATIONS",
    "PreparedBucket",
    "build_parser",
    "location",
    "report_bucket",
    "run",
]

DESCRIPTION = "Upload a bundle (its parts, then its manifest) to S3, creating the bucket if needed."
ACLS = s3.CANNED_ACLS
# The --location spellings of the classic tools (classic-cli.md §11); "US" means
# no location constraint (us-east-1), "EU" is eu-west-1's old name.
CLASSIC_LOCATIONS = (
    "EU",
    "eu-west-1",
    "US",
    "us-gov-west-1",
    "cn-north-1",
    "us-west-1",
    "us-west-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
)
# Any current AWS region name (eu-central-1, us-gov-east-1, ap-southeast-3,
# eusc-de-east-1, ...).
_REGION_SHAPE = re.compile(r"[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}")
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--bucket",
    "--access-key",
    "--secret-key",
    "--delegation-token",
    "--manifest",
    "--url",
    "--region",
    "--sigv",
    "--acl",
    "--directory",
    "--part",
    "--retry",
    "--skipmanifest",
    "--location",
)
MANUAL = f"""{DESCRIPTION}

The bucket is created when it does not exist, in --location (or the region), with
Object Ownership "BucketOwnerPreferred" so that the canned ACL works. An existing
bucket in another location than requested is an error (classic exit status 10). A
bucket with ACLs disabled (Object Ownership "BucketOwnerEnforced", the default of
new buckets since 2023) is refused before any byte is sent: EC2 could not read the
bundle. The error gives the command that fixes it; --fix-ownership applies it.

Parts are uploaded in parallel (--jobs), each with its MD5 (Content-MD5) and the
canned ACL, after checking its SHA-1 against the manifest. A part already in the
bucket with the same size and MD5 is skipped, so running the command again after
an interruption sends only what is missing. The manifest goes last, only after
every part succeeded, so a bundle that can be registered is always complete.
Transient errors (5xx, throttling, dropped connections) are retried with backoff.

Credentials: -a/-s (and -t), else the standard AWS chain (environment variables,
--profile or ~/.aws, the instance role).

Examples:
  ec2-upload-bundle -b mybucket/images -m out/root.img.manifest.xml -a AKIA... -s ...
  amibundle upload -b mybucket/images -m out/root.img.manifest.xml --region eu-west-1
  amibundle upload -b test -m out/root.img.manifest.xml --url http://127.0.0.1:8333
"""


def location(value: str) -> str:
    """``--location``: a classic spelling or any region name; ``us-east-1`` means ``US``."""
    if value == "us-east-1":
        return "US"
    if value in CLASSIC_LOCATIONS or _REGION_SHAPE.fullmatch(value):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: expected a region name or one of {', '.join(CLASSIC_LOCATIONS)}"
    )


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog,
        style,
        description=DESCRIPTION,
        manual=MANUAL,
        usage="%(prog)s -b BUCKET[/PREFIX] -m PATH [options]",
    )
    add_s3_options(parser)
    parser.mandatory_group.add_argument(
        "-m",
        "--manifest",
        metavar="PATH",
        type=existing_file,
        help="the bundle's manifest file",
    )
    parser.add_argument(
        "-d",
        "--directory",
        metavar="DIR",
        type=existing_dir,
        help="where the parts are (default: the manifest's folder)",
    )
    parser.add_argument(
        "--acl",
        metavar="ACL",
        choices=ACLS,
        default="aws-exec-read",
        help="canned ACL of every object: aws-exec-read (default: the owner and EC2 "
        "may read), public-read, bucket-owner-full-control or private",
    )
    parser.add_argument(
        "--location",
        metavar="LOCATION",
        type=location,
        help="where the bucket must be: US (= us-east-1), EU, or a region name; a new "
        "bucket is created there (default: the region of --region)",
    )
    parser.add_argument(
        "--part",
        metavar="N",
        type=integer,
        help="skip the parts numbered below N (the classic way to resume; not needed: "
        "parts already uploaded are skipped anyway)",
    )
    parser.add_argument("--skipmanifest", action="store_true", help="do not upload the manifest")
    parser.add_argument(
        "--fix-ownership",
        action="store_true",
        help="if the bucket has ACLs disabled (BucketOwnerEnforced), set its Object "
        "Ownership to BucketOwnerPreferred instead of stopping",
    )
    add_allow_zstd_option(parser)
    add_progress_option(parser)
    return finish_s3_parser(parser, style, CLASSIC_LONGS, _check)


def add_allow_zstd_option(parser: OptionParser) -> None:
    """``--allow-zstd``: upload and bundle-upload refuse a zstd bundle for AWS without it."""
    parser.add_argument(
        "--allow-zstd",
        action="store_true",
        help="upload a zstd bundle to AWS all the same (EC2 cannot register it; other "
        "S3 endpoints take one without this)",
    )


def _check(args: argparse.Namespace) -> None:
    """Classic order: access key, secret key, bucket, --sigv, manifest."""
    check_common(args)
    if args.manifest is None:
        raise UsageError("missing mandatory option --manifest")


def note_derived_location(args: argparse.Namespace, notes: Announcements) -> None:
    """As the classic tools did (§1.9.3), say that ``--region`` also fixes where
    the bucket must be, when ``--location`` does not."""
    if args.location is None and args.region and args.region != "us-east-1" and not args.json:
        notes.add(f"note: bucket location derived from --region: {args.region}", stderr=True)


def confirm_bucket_name(bucket: s3.BucketRef, *, batch: bool) -> None:
    if is_v2_safe(bucket.bucket):
        return
    confirm(
        f"warning: bucket name {bucket.bucket!r} is not valid in most regions (at most 63 "
        "characters of a-z 0-9 . -, no '_', no '-.' or '.-', not ending in '-'); "
        "only an old us-east-1 bucket can have it",
        "Are you sure you want to continue?",
        batch=batch,
    )


class PreparedBucket(Protocol):
    """What an upload's result says about the bucket it made ready."""

    @property
    def bucket(self) -> s3.BucketRef: ...
    @property
    def region(self) -> str: ...
    @property
    def bucket_created(self) -> bool: ...
    @property
    def ownership_changed(self) -> bool: ...


def report_bucket(result: PreparedBucket) -> None:
    """The lines upload and bundle-upload print when they changed the bucket."""
    name = result.bucket.bucket
    if result.bucket_created:
        print(f"Created bucket {name} in {result.region}")
    if result.ownership_changed:
        print(f"Set Object Ownership of bucket {name} to BucketOwnerPreferred")


def report(result: s3.UploadResult, *, json_output: bool) -> None:
    if json_output:
        print_json(result.to_dict())
        return
    report_bucket(result)
    if result.parts_before_first:
        print(f"Skipped {plural(result.parts_before_first, 'part')} numbered below --part")
    manifest = (
        f"manifest at {result.bucket.url(result.manifest_key)}"
        if result.manifest_uploaded
        else "manifest not uploaded (--skipmanifest)"
    )
    print(
        f"Upload complete: {plural(result.parts_uploaded, 'part')} uploaded, "
        f"{result.parts_skipped} already there, {human_size(result.bytes_uploaded)} in "
        f"{result.seconds:.1f} s{rate_note(result.bytes_uploaded, result.seconds)}; {manifest}"
    )


def run(args: argparse.Namespace, style: Style) -> int | None:
    bucket: s3.BucketRef = args.bucket_ref
    confirm_bucket_name(bucket, batch=args.batch)
    # Printed once the library has read the manifest, found every part and
    # prepared the bucket: never before an error about an argument.
    notes = Announcements.of(args)
    note_sigv(args, notes)
    note_derived_location(args, notes)
    if not args.json:
        notes.add(f"Uploading {args.manifest} to {bucket.url()} ...")
    with progress_for(args) as progress:
        result = s3.upload_bundle(
            args.manifest,
            bucket,
            settings=settings_from(args),
            directory=args.directory,
            acl=args.acl,
            location=args.location,
            # Ruby took any integer: a negative --part, like 0, means every part.
            first_part=max(args.part, 0) if args.part is not None else 0,
            skip_manifest=args.skipmanifest,
            fix_ownership=args.fix_ownership,
            allow_zstd=args.allow_zstd,
            progress=notes.progress(progress),
        )
    report(result, json_output=args.json)
    return None
