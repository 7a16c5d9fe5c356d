"""``amibundle install``: an image (or a volume) to a registered AMI in one
command: bundle straight into S3, then register, like euca2ools' install-image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amibundle import s3
from amibundle.cli._aws import (
    add_ec2_url,
    add_registration_options,
    print_leftovers,
    registration_of,
)
from amibundle.cli._common import Announcements, command_parser, print_json
from amibundle.cli._options import OptionParser, Style, add_check, add_common_options, exclusive
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._s3options import check_common
from amibundle.cli._values import choice_prefix, comma_list, existing_dir
from amibundle.cli.bundle_image import codec_of
from amibundle.cli.bundle_upload import (
    add_bundle_upload_options,
    check_key_pair_given,
    prepare_upload,
)
from amibundle.cli.bundle_upload import (
    report as report_upload,
)
from amibundle.cli.bundle_vol import size_value
from amibundle.errors import LeftoversError, UsageError
from amibundle.identity import BundleKeys
from amibundle.installing import check_registration, install_image, register_uploaded
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import Codec
from amibundle.progress import Progress
from amibundle.uploading import BundleUploadResult, UploadTarget
from amibundle.volume.plan import Builder, PartitionTable

__all__ = ["build_parser", "run"]

DESCRIPTION = (
    "Bundle an image file (or, with --volume, a root tree) straight into S3 and "
    "register it as an AMI, in one command."
)
MANUAL = f"""{DESCRIPTION}

bundle-upload, then register: the options of both (the API block-device mappings of
register are --register-mapping here, -b being the bucket). The registration is
checked before anything is read or sent (a kernel on an hvm image, say); the
bucket too, as bundle-upload does. Without -u the account comes from STS; without
--region the bucket's region is used for S3 and EC2 alike.

With --volume PATH (instead of -i), the image file is first built from the tree at
PATH as bundle-vol builds it (in -d, default /tmp; --size, --fs-type, --builder ...),
with kernel, ramdisk and mappings inherited from the instance metadata on EC2.

A failure after the upload registers or deregisters nothing that was not this
command's: the error says what exists (the bundle's manifest location, and the
AMI id if one was registered); an AMI this command registered that ends "failed"
(--wait) is deregistered, the bundle is kept.

Prints the AMI id (--json: the upload's and the registration's details).

Examples:
  amibundle install -i root.img -c cert.pem -k pk.pem -r x86_64 -b mybucket/images \\
      -n "ci build 1234" --wait
  amibundle install --volume ./rootfs --size auto --fs-type ext4 --no-inherit \\
      -c cert.pem -k pk.pem -r x86_64 -b mybucket/images -n "rootfs 1234" --boot-mode uefi
"""


def _add_volume_options(parser: OptionParser) -> None:
    """The bundle-vol options install takes with --volume."""
    parser.add_argument(
        "--volume", metavar="PATH", type=existing_dir, help="build the image from this tree"
    )
    parser.add_argument(
        "-d",
        "--destination",
        metavar="DIR",
        type=existing_dir,
        default=Path("/tmp"),
        help="with --volume: where the image file is built (default: /tmp)",
    )
    parser.add_argument(
        "--size",
        metavar="MB",
        type=size_value,
        default=None,
        help="with --volume: image size in MiB, or auto (default: auto)",
    )
    parser.add_argument("--fs-type", metavar="TYPE", help="with --volume: file system type")
    parser.add_argument("--label", metavar="LABEL", help="with --volume: file system label")
    parser.add_argument(
        "--builder", choices=[b.value for b in Builder], help="with --volume: loop or rootless"
    )
    parser.add_argument(
        "-e", "--exclude", metavar="DIR,...", type=comma_list, action="append", default=[],
        help="with --volume: paths to leave out",
    )  # fmt: skip
    parser.add_argument(
        "--include", metavar="FILE,...", type=comma_list, action="append", default=[],
        help="with --volume: paths to copy whatever the rules say",
    )  # fmt: skip
    parser.add_argument(
        "-P", "--partition", metavar="TYPE",
        type=choice_prefix([table.value for table in PartitionTable]),
        help="with --volume: none, mbr or gpt",
    )  # fmt: skip
    parser.add_argument(
        "--generate-fstab", metavar="VARIANT", choices=("default", "legacy", "modern"),
        help="with --volume: install a generated /etc/fstab",
    )  # fmt: skip
    parser.add_argument(
        "--no-inherit", action="store_true",
        help="with --volume: do not ask the instance metadata service",
    )  # fmt: skip
    parser.add_argument(
        "--no-bootloader", action="store_true", help="with --volume: no GRUB in a partitioned image"
    )


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    add_bundle_upload_options(parser, image_required=False)
    add_registration_options(
        parser, mapping_flags=("--register-mapping",), from_manifest_options=True
    )
    add_ec2_url(parser)
    _add_volume_options(parser)
    add_progress_option(parser)
    add_common_options(parser)
    exclusive(parser, "--image", "--volume", required=True)
    add_check(parser, _check)
    return parser


def _check(args: argparse.Namespace) -> None:
    check_common(args)
    check_key_pair_given(args)
    if not args.name:
        raise UsageError("missing mandatory option --name")
    if args.volume is None:
        for flag, value in (("--size", args.size), ("--fs-type", args.fs_type),
                            ("--builder", args.builder)):  # fmt: skip
            if value is not None:
                raise UsageError(f"{flag} is for --volume")


def _report(upload: BundleUploadResult, image_id: str, state: str, args: argparse.Namespace,
            details: dict[str, object]) -> None:  # fmt: skip
    if args.json:
        print_json(details)
        return
    report_upload(upload, json_output=False, tool="upload")
    print(f"Registered {image_id} ({state})")
    print(image_id)


def run(args: argparse.Namespace, style: Style) -> int | None:
    bucket: s3.BucketRef = args.bucket_ref
    notes, settings, keys, metadata = prepare_upload(args)
    registration = registration_of(args, own_kernel=False)
    check_registration(registration, metadata)
    codec = codec_of(args, notes)
    source = args.image or args.volume
    if not args.json:
        notes.add(f"Installing {source} as {args.name!r} through {bucket.url()} ...")
    try:
        with progress_for(args) as bars:
            progress = notes.progress(bars)
            if args.image is not None:
                result = install_image(
                    args.image, bucket, metadata=metadata, keys=keys, registration=registration,
                    settings=settings, ec2_endpoint_url=args.ec2_url, prefix=args.prefix,
                    acl=args.acl, location=args.location, fix_ownership=args.fix_ownership,
                    keep_partial=args.keep_partial, force=args.force,
                    size_checks=not args.no_size_checks, part_size=args.part_size, codec=codec,
                    wait=args.wait, wait_timeout=args.wait_timeout, progress=progress,
                )  # fmt: skip
                upload, registered = result.upload, result.registration
                details = result.to_dict()
            else:
                upload = _bundle_volume(args, settings, keys, metadata, codec, progress, notes)
                registered = register_uploaded(
                    upload, registration, settings=settings, ec2_endpoint_url=args.ec2_url,
                    wait=args.wait, wait_timeout=args.wait_timeout,
                )  # fmt: skip
                details = {"upload": upload.to_dict(), "registration": registered.to_dict()}
    except LeftoversError as err:
        print_leftovers(err)
        raise
    _report(upload, registered.image_id, registered.state, args, details)
    sys.stdout.flush()
    return None


def _bundle_volume(
    args: argparse.Namespace,
    settings: s3.S3Settings,
    keys: BundleKeys,
    metadata: BundleMetadata,
    codec: Codec,
    progress: Progress,
    notes: Announcements,
) -> BundleUploadResult:
    from amibundle.volume.bundle import bundle_volume

    def print_line(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    say = notes.notify(print_line)
    bucket: s3.BucketRef = args.bucket_ref

    built = bundle_volume(
        args.volume, metadata=metadata, keys=keys, destination=args.destination,
        prefix=args.prefix or "image", size_mib=args.size,
        exclude=[item for value in args.exclude for item in value],
        include=[item for value in args.include for item in value],
        partition=args.partition, generate_fstab=args.generate_fstab,
        inherit=False if args.no_inherit else None, builder=args.builder, fs_type=args.fs_type,
        label=args.label, bootloader=not args.no_bootloader, keep_partial=args.keep_partial,
        size_checks=not args.no_size_checks, force=args.force, part_size=args.part_size,
        codec=codec, progress=progress, notify=say,
        upload=UploadTarget(bucket, settings, acl=args.acl, location=args.location,
                            fix_ownership=args.fix_ownership),
    )  # fmt: skip
    assert isinstance(built.bundle, BundleUploadResult)
    return built.bundle
