"""``amibundle bundle-upload`` / ``ec2-bundle-and-upload-image``: bundle an image
straight into S3, in one pass, with no parts on the local disk."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from amibundle import s3
from amibundle.cli._aws import account_of, print_leftovers
from amibundle.cli._common import (
    Announcements,
    command_parser,
    human_size,
    plural,
    print_json,
    rate_note,
)
from amibundle.cli._options import OptionParser, Style, add_check, add_common_options, mandatory
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._s3options import add_s3_options, check_common, note_sigv, settings_from
from amibundle.cli._values import existing_file
from amibundle.cli.bundle_image import (
    add_image_type_options,
    add_key_options,
    add_manifest_options,
    add_output_options,
    choose_architecture,
    codec_of,
    note_missing_mappings,
)
from amibundle.cli.upload import (
    ACLS,
    confirm_bucket_name,
    location,
    note_derived_location,
    report_bucket,
)
from amibundle.errors import LeftoversError, UsageError
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.uploading import BundleUploadResult, bundle_upload
from amibundle.validate import check_image_size, detect_architecture

__all__ = [
    "add_bundle_upload_options",
    "check_image_file",
    "check_key_pair_given",
    "add_upload_options",
    "build_parser",
    "keys_and_metadata",
    "prepare_upload",
    "report",
    "run",
    "upload_settings",
]

DESCRIPTION = (
    "Bundle an image file straight into an S3 bucket: parts are uploaded while the "
    "image is compressed, nothing bundle-sized is written locally, the manifest goes last."
)
MANUAL = f"""{DESCRIPTION}

Takes bundle-image's options (without -d) and upload's. The bucket is made ready
first, exactly as upload does (created when missing, its location checked, a bucket
with ACLs disabled refused unless --fix-ownership), before the image is read. Then
the image streams through tar, gzip and AES into parts that go up at most --jobs at
a time, each with the canned ACL and its Content-MD5; a part that meets a server
error, throttling or a dropped connection is sent again from memory. Memory stays
bounded by --jobs + 1 parts whatever the image size. The manifest is uploaded last,
once every part is confirmed.

On any failure or Ctrl-C the objects already uploaded are deleted (--keep-partial
keeps them); if that deletion fails too, the keys left behind are listed and the
exit status is non-zero.

Without -u the account comes from STS (the AWS credentials' account); without
--region (or AWS_REGION, a profile's region) the bucket's own region is used, for
S3 and to pick EC2's certificate.

Part names: <prefix>.part.<i>, zero-padded to the digit count of the largest part
count the image could give (so part 0 is named before the count is known); the
manifest lists them, and EC2 and every reader take the names from there.

Examples:
  amibundle bundle-upload -i root.img -c cert.pem -k pk.pem -r x86_64 -b mybucket/images
  ec2-bundle-and-upload-image -i root.img -c cert.pem -k pk.pem -u 123456789012 \\
      -r x86_64 -b mybucket/images --region eu-west-1
"""


def add_upload_options(parser: OptionParser, *, keep_partial: bool = True) -> None:
    """upload's bucket options plus --keep-partial (bundle-vol has its own)."""
    parser.add_argument(
        "--acl",
        metavar="ACL",
        choices=ACLS,
        default="aws-exec-read",
        help="canned ACL of every object: aws-exec-read (default), public-read, "
        "bucket-owner-full-control or private",
    )
    parser.add_argument(
        "--location",
        metavar="LOCATION",
        type=location,
        help="where the bucket must be: US, EU or a region name; a new bucket is created "
        "there (default: the region)",
    )
    parser.add_argument(
        "--fix-ownership",
        action="store_true",
        help="if the bucket has ACLs disabled, set its Object Ownership to "
        "BucketOwnerPreferred instead of stopping",
    )
    if keep_partial:
        parser.add_argument(
            "--keep-partial",
            action="store_true",
            help="after a failure, keep the objects already uploaded (default: delete them)",
        )


def add_bundle_upload_options(parser: OptionParser, *, image_required: bool = True) -> None:
    """bundle-image's options but -d, and upload's: shared with install."""
    image_help = "the image file to bundle"
    if image_required:
        mandatory(parser, "-i", "--image", metavar="PATH", type=existing_file, help=image_help)
    else:
        parser.add_argument("-i", "--image", metavar="PATH", type=existing_file, help=image_help)
    add_key_options(parser, user_from_sts=True, region=False)
    add_s3_options(parser, bucket_region=True)
    parser.add_argument(
        "-p",
        "--prefix",
        metavar="NAME",
        help="bundle object names and image name (default: the image's name)",
    )
    add_manifest_options(parser)
    add_image_type_options(parser)
    add_upload_options(parser)
    add_output_options(parser)  # --force replaces a bundle of the same name in the bucket


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    add_bundle_upload_options(parser)
    add_progress_option(parser)
    add_common_options(parser)
    add_check(parser, check_common)
    add_check(parser, check_key_pair_given)
    return parser


def check_image_file(args: argparse.Namespace) -> None:
    """The raw image's size, before any question or line is printed (the
    library checks it again)."""
    try:
        size = Path(args.image).stat().st_size
    except OSError:
        return  # the library reports it
    check_image_size(size, size_checks=not args.no_size_checks)


def check_key_pair_given(args: argparse.Namespace) -> None:
    """-c and -k: a streamed bundle has no folder where a key made for it
    could be kept (bundle-image makes one when they are missing)."""
    for flag, value in (("--cert", args.cert), ("--privatekey", args.privatekey)):
        if value is None:
            raise UsageError(
                f"missing mandatory option {flag}",
                hint="a bundle streamed to S3 needs your key pair: a key made for it "
                "would be kept nowhere",
            )


def upload_settings(args: argparse.Namespace) -> tuple[s3.S3Settings, str]:
    """The S3 settings, with the bucket's region when none is given, and the
    account (-u, else from STS: checked first, so that without credentials
    the error is the classic missing --user)."""
    settings = settings_from(args)
    account = account_of(args, settings)
    return s3.with_bucket_region(settings, args.bucket_ref), account


def keys_and_metadata(
    args: argparse.Namespace, settings: s3.S3Settings, account: str, notes: Announcements
) -> tuple[BundleKeys, BundleMetadata]:
    """The keys (EC2's certificate picked by the region) and the manifest's
    fields, every one checked before the architecture is asked for (a
    question must not come before an error about another argument)."""
    metadata = BundleMetadata.create(
        user=account,
        arch=args.arch or detect_architecture(),
        image_type=getattr(args, "image_type", "machine"),
        kernel_name=getattr(args, "kernel_name", None),
        kernel_id=args.kernel,
        ramdisk_id=args.ramdisk,
        product_codes=[args.productcodes] if args.productcodes else [],
        block_device_mapping=args.block_device_mapping,
    )
    keys = BundleKeys.load(
        cert=args.cert, private_key=args.privatekey, ec2_cert=args.ec2cert, region=settings.region
    )
    metadata = replace(metadata, architecture=choose_architecture(args))
    note_missing_mappings(args.block_device_mapping, notes)
    return keys, metadata


def report(result: BundleUploadResult, *, json_output: bool, tool: str) -> None:
    if json_output:
        print_json(result.to_dict())
        return
    report_bucket(result)
    if result.replaced_keys:
        print(f"Deleted {plural(len(result.replaced_keys), 'part')} of the bundle it replaced")
    print(
        f"{tool} complete: {plural(len(result.part_keys), 'part')}, "
        f"{human_size(result.bundled_size)} in {result.seconds:.1f} s"
        f"{rate_note(result.data_size, result.seconds, 'of image data')}; "
        f"manifest at {result.bucket.url(result.manifest_key)}"
    )


def prepare_upload(
    args: argparse.Namespace,
) -> tuple[Announcements, s3.S3Settings, BundleKeys, BundleMetadata]:
    """What bundle-upload and install check and ask before anything is read: the
    image's size (with -i), the bucket's name, the settings and account, the keys
    and the manifest's fields. The notes are printed once the library has checked
    everything and starts working: never before an error about an argument."""
    if args.image is not None:
        check_image_file(args)
    confirm_bucket_name(args.bucket_ref, batch=args.batch)
    notes = Announcements.of(args)
    note_sigv(args, notes)
    note_derived_location(args, notes)
    settings, account = upload_settings(args)
    keys, metadata = keys_and_metadata(args, settings, account, notes)
    return notes, settings, keys, metadata


def run(args: argparse.Namespace, style: Style) -> int | None:
    bucket: s3.BucketRef = args.bucket_ref
    notes, settings, keys, metadata = prepare_upload(args)
    codec = codec_of(args, notes)
    if not args.json:
        notes.add(f"Bundling {args.image} into {bucket.url()} ...")
    try:
        with progress_for(args) as bars:
            progress = notes.progress(bars)
            result = bundle_upload(
                args.image,
                bucket,
                metadata=metadata,
                keys=keys,
                settings=settings,
                prefix=args.prefix,
                acl=args.acl,
                location=args.location,
                fix_ownership=args.fix_ownership,
                keep_partial=args.keep_partial,
                force=args.force,
                size_checks=not args.no_size_checks,
                part_size=args.part_size,
                codec=codec,
                progress=progress,
            )
    except LeftoversError as err:
        print_leftovers(err)
        raise
    tool = "ec2-bundle-and-upload-image" if style is Style.CLASSIC else "bundle-upload"
    report(result, json_output=args.json, tool=tool)
    sys.stdout.flush()
    return None
