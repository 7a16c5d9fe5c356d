"""``amibundle migrate-bundle`` / ``ec2-migrate-bundle``: copy a bundle to another bucket
(another region) by server-side copy, its manifest migrated (``classic-cli.md`` §9)."""

from __future__ import annotations

import argparse
import sys

from amibundle import s3
from amibundle.cli._common import (
    Announcements,
    command_parser,
    human_size,
    plural,
    print_json,
    rate_note,
)
from amibundle.cli._migrate import add_mapping_options, check_credentials, choose_ids
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_check,
    add_common_options,
    mandatory,
)
from amibundle.cli._progress import TqdmProgress
from amibundle.cli._s3options import (
    DEFAULT_ATTEMPTS,
    DEFAULT_JOBS,
    RETRY_ATTEMPTS,
    attempts,
    endpoint_url,
    jobs,
)
from amibundle.cli._values import existing_file
from amibundle.cli.upload import ACLS, confirm_bucket_name, location
from amibundle.errors import AmibundleError, UsageError
from amibundle.identity import BundleKeys
from amibundle.migration import migrated_manifest
from amibundle.reading import check_signature
from amibundle.s3.settings import DEFAULT_REGION, region_of_location

__all__ = ["CLASSIC_LONGS", "DESCRIPTION", "MANUAL", "build_parser", "run"]

DESCRIPTION = (
    "Copy a bundle to another bucket (another region) by server-side copy, its manifest "
    "migrated for the target region."
)
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--cert",
    "--privatekey",
    "--manifest",
    "--bucket",
    "--destination-bucket",
    "--access-key",
    "--secret-key",
    "--ec2cert",
    "--acl",
    "--url",
    "--retry",
    "--location",
    "--kernel",
    "--ramdisk",
    "--no-mapping",
    "--region",
)
MANUAL = f"""{DESCRIPTION}

The manifest -m (a name in the source bucket -b) is read and its signature checked with
-c; it is migrated as migrate-manifest does it (kernel and ramdisk mapped to the target
region unless --no-mapping, --kernel/--ramdisk winning, questions for lost or unknown
ids, EC2's copy of the bundle key wrapped again for the target region's certificate,
version 2007-10-10, signed with -k). Then every part is copied by S3 itself from -b to
-d (CopyObject: no part passes through this machine), in parallel, with the canned ACL,
and each copy is checked against its source by size and ETag; the migrated manifest is
put last. Parts already at the destination with the same size and ETag are not copied
again: run the command again to finish an interrupted copy. The destination bucket is
created when missing (in --location), or must be in --location (classic exit 10).

The target region is --region, else that of --location, else that of the existing
destination bucket, else {DEFAULT_REGION}. --url is the S3 endpoint of both buckets
(default: AWS, by region); --source-url and --source-region reach the source through
other ones. S3 copies between buckets of one service, across regions.

Credentials: -a/-s, else the standard AWS chain (environment, profile, instance role).

Examples:
  ec2-migrate-bundle -m root.img.manifest.xml -b old-bucket/images -d new-bucket/images \\
      -c cert.pem -k pk.pem -a AKIA... -s ... --location eu-west-1
  amibundle migrate-bundle -m root.img.manifest.xml -b old -d new -c cert.pem -k pk.pem \\
      --region eu-west-1 --source-region us-east-1 --no-mapping --kernel aki-12345678
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    mandatory(
        parser,
        "-m",
        "--manifest",
        metavar="NAME",
        help="the manifest's name in the source bucket (NAME.manifest.xml, not a path)",
    )
    mandatory(
        parser,
        "-c",
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="your certificate: checks the manifest's signature",
    )
    mandatory(
        parser,
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="your private key: signs the new manifest, unwraps the bundle key",
    )
    mandatory(
        parser, "-b", "--bucket", metavar="BUCKET[/PREFIX]", help="the source bucket and prefix"
    )
    mandatory(
        parser,
        "-d",
        "--destination-bucket",
        metavar="BUCKET[/PREFIX]",
        help="the destination bucket and prefix (created if missing)",
    )
    parser.add_argument(
        "-a", "--access-key", metavar="ID", help="AWS access key id (default: the AWS chain)"
    )
    parser.add_argument("-s", "--secret-key", metavar="KEY", help="AWS secret access key")
    parser.add_argument(
        "--ec2cert",
        metavar="PATH",
        type=existing_file,
        help="the target region's EC2 certificate (default: found by the target region)",
    )
    parser.add_argument(
        "--acl",
        metavar="ACL",
        choices=ACLS,
        default="aws-exec-read",
        help="canned ACL of the copies and the manifest: aws-exec-read (default), "
        "public-read, bucket-owner-full-control or private",
    )
    parser.add_argument(
        "--url", metavar="URL", type=endpoint_url, help="S3 endpoint (default: AWS, by region)"
    )
    parser.add_argument(
        "--source-url",
        metavar="URL",
        type=endpoint_url,
        help="the source bucket's S3 endpoint (default: --url)",
    )
    parser.add_argument(
        "--retry",
        metavar="N",
        nargs="?",
        const=RETRY_ATTEMPTS,
        type=attempts,
        help=f"try each request up to {RETRY_ATTEMPTS} times (--retry=N: N times)",
    )
    parser.add_argument(
        "--location",
        metavar="LOCATION",
        type=location,
        help="where the destination bucket must be: US, EU or a region name",
    )
    add_mapping_options(parser)
    parser.add_argument(
        "--jobs",
        metavar="N",
        type=jobs,
        default=DEFAULT_JOBS,
        help=f"parallel copies (default: {DEFAULT_JOBS})",
    )
    parser.add_argument(
        "--fix-ownership",
        action="store_true",
        help="if the destination bucket has ACLs disabled, set its Object Ownership to "
        "BucketOwnerPreferred instead of stopping",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_common_options(parser)
    if style is Style.CLASSIC:
        parser.keep_classic_abbreviations(CLASSIC_LONGS)
    add_check(parser, _check)
    return parser


def _bucket(option: str, value: str) -> s3.BucketRef:
    try:
        return s3.parse_bucket(value)
    except AmibundleError as error:
        raise UsageError(f"invalid value for {option}: {error}", hint=error.hint) from None


def _check(args: argparse.Namespace) -> None:
    """After the mandatory options: -m is a manifest name, then the buckets, then the keys."""
    name = args.manifest
    if "/" in name or not name.endswith(".manifest.xml") or name == ".manifest.xml":
        raise UsageError(
            f"invalid value for --manifest: {name!r}: a name ending in .manifest.xml, no '/'"
        )
    args.source_ref = _bucket("--bucket", args.bucket)
    args.destination_ref = _bucket("--destination-bucket", args.destination_bucket)
    check_credentials(args)


def _settings(args: argparse.Namespace, *, region: str | None, url: str | None) -> s3.S3Settings:
    return s3.S3Settings(
        access_key=args.access_key,
        secret_key=args.secret_key,
        region=region,
        endpoint_url=url,
        attempts=DEFAULT_ATTEMPTS if args.retry is None else args.retry,
        jobs=args.jobs,
    )


def target_region(args: argparse.Namespace, notes: Announcements) -> str:
    """--region, else the region of --location, else that of the existing destination
    bucket, else us-east-1 (the classic guessed the same way and said so)."""
    if args.region:
        return str(args.region)
    if args.location:
        return region_of_location(args.location)
    found = s3.bucket_location(
        args.destination_ref, settings=_settings(args, region=None, url=args.url)
    )
    region = region_of_location(found) if found is not None else DEFAULT_REGION
    where = f"bucket {args.destination_ref.bucket}" + ("" if found else " (to be created)")
    notes.add(f"note: target region {region}, the region of {where}", stderr=True)
    return region


def report(result: s3.CopyResult, lines: tuple[str, ...]) -> None:
    for line in lines:
        print(line)
    if result.bucket_created:
        print(f"Created bucket {result.bucket.bucket} in {result.region}")
    print(
        f"Copy complete: {plural(result.parts_copied, 'part')} copied, {result.parts_skipped} "
        f"already there, {human_size(result.bytes_copied)} in {result.seconds:.1f} s"
        f"{rate_note(result.bytes_copied, result.seconds)} by server-side copy"
    )
    print(f"\nYour new bundle is in {result.bucket.bucket}/{result.manifest_key}")
    print("Register it with EC2 (aws ec2 register-image --image-location ...) to use it.")


def run(args: argparse.Namespace, style: Style) -> int | None:
    source: s3.BucketRef = args.source_ref
    destination: s3.BucketRef = args.destination_ref
    confirm_bucket_name(destination, batch=args.batch)
    notes = Announcements()
    region = target_region(args, notes)
    keys = BundleKeys.load(
        cert=args.cert, private_key=args.privatekey, ec2_cert=args.ec2cert, region=region
    )
    source_settings = _settings(args, region=args.source_region, url=args.source_url or args.url)
    parsed = s3.read_bundle_manifest(source, args.manifest, settings=source_settings)
    check_signature(parsed, keys.certificate)
    notes.flush()
    choice = choose_ids(parsed.manifest, args, region)
    migrated = migrated_manifest(parsed, keys=keys, ids=choice.ids)
    if not args.json:
        notes.add(f"Copying {source.url(source.key(args.manifest))} to {destination.url()} ...")
    with TqdmProgress(quiet=args.quiet or args.json) as bars:
        result = s3.copy_bundle(
            source,
            destination,
            manifest=migrated.data,
            manifest_name=args.manifest,
            source_settings=source_settings,
            settings=_settings(args, region=region, url=args.url),
            acl=args.acl,
            location=args.location,
            fix_ownership=args.fix_ownership,
            progress=notes.progress(bars),
        )
    if args.json:
        print_json({**result.to_dict(), "ec2_certificate": str(migrated.ec2_certificate)})
        return None
    lines = (
        *choice.lines,
        f"EC2's copy of the bundle key re-wrapped for {migrated.ec2_certificate}",
    )
    report(result, lines)
    sys.stdout.flush()
    return None
