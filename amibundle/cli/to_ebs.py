"""``amibundle to-ebs``: a bundle (or an image file) streamed into an EBS snapshot."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace

from amibundle.cli._common import command_parser, human_size, plural, print_json, rate_note
from amibundle.cli._options import OptionParser, Style, add_check, add_common_options, exclusive
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._s3options import (
    attempts,
    bucket_ref,
    check_bundle_names,
    endpoint_url,
    jobs,
    region_name,
)
from amibundle.cli._values import choice_prefix, existing_dir, existing_file, integer
from amibundle.cli.download import manifest_name
from amibundle.cli.download_unbundle import PREFETCH
from amibundle.ebs.bootable import BootableSpec
from amibundle.ebs.convert import SnapshotResult, bundle_to_snapshot, image_to_snapshot
from amibundle.ebs.from_s3 import s3_bundle_to_snapshot
from amibundle.ebs.register import RegisteredImage, check_image_name, register_snapshot
from amibundle.ebs.snapshot import SnapshotSpec, parse_tag
from amibundle.errors import UsageError
from amibundle.s3.settings import S3Settings

__all__ = ["build_parser", "run"]

DEFAULT_JOBS = 8
DESCRIPTION = "Stream a bundle or an image file into an EBS snapshot: no instance, no volume."
MANUAL = f"""{DESCRIPTION}

The bundle is read, checked (every part's SHA-1, the image digest at the end),
decrypted and inflated as one stream, cut into 512 KiB blocks, and only the
blocks that hold data are written, in parallel (--jobs), with the EBS direct
APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot). An image file (-i) is
read by its data extents: holes are never read. The snapshot's volume size is the
image's rounded up to GiB (or --size).

A bundle in S3 (-b BUCKET[/PREFIX] with -p NAME for NAME.manifest.xml, or -m with
the manifest's name) is read as download-unbundle reads it: the manifest first
(its signature with --cert, its key unwrapped by -k), then the parts in order, a
few fetched ahead, each checked before it is used; nothing bundle-sized is stored.

The snapshot is completed only when every check passed. After any failure, and
after Ctrl-C, it is not completed: it is deleted (or, when even that fails,
left pending; EBS marks it 'error' after --timeout minutes without a write).

--make-bootable writes a partitionless file-system image with a kernel in its
/boot as a partitioned disk (GPT or MBR) that boots by itself: the file system
is partition 1, unchanged (its UUID and label kept); GRUB (from this machine's
grub-pc-bin / grub-efi-amd64-bin) goes around it, in partition 2 and the boot
sectors, and boots the newest /boot/vmlinuz-* of the image. With -m the file
system is also kept in a sparse file under --work-dir while it streams, to read
its /boot at the end.

--register NAME waits for the snapshot to be completed, then registers an
EBS-backed AMI of it (RegisterImage: the snapshot as root volume, the manifest's
ephemeral mappings, architecture; paravirtual with the manifest's kernel, or hvm
with the boot mode and ENA for --make-bootable), named NAME, with --description
and the --tag tags. If EC2 refuses, the snapshot is complete and stays: the error
names it and says how to register it by hand or delete it.

Endpoints follow boto3's configuration (AWS_ENDPOINT_URL_EBS, _EC2, _S3,
AWS_ENDPOINT_URL, a profile's endpoint_url) unless --ebs-url / --ec2-url /
--s3-url say otherwise; credentials and region come from the standard AWS chain
or --profile/--region (the snapshot is made there, not in the bucket's region).

Examples:
  amibundle to-ebs -m out/root.img.manifest.xml -k pk.pem --tag Name=root --wait
  amibundle to-ebs -b mybucket/images -p root.img -k pk.pem --cert cert.pem --register root-2024
  amibundle to-ebs -i root.img --make-bootable --register web-hvm --json
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog, style, description=DESCRIPTION, manual=MANUAL,
        usage="%(prog)s (-m PATH -k PATH | -b BUCKET[/PREFIX] [-p NAME | -m NAME] -k PATH "
        "| -i PATH) [--register NAME] [options]",
    )  # fmt: skip
    source = parser.mandatory_group
    source.add_argument("-m", "--manifest", metavar="PATH",
                        help="a local bundle's manifest file (with -k); with -b, the "
                        "manifest's name in the bucket")  # fmt: skip
    source.add_argument("-b", "--bucket", metavar="BUCKET[/PREFIX]",
                        help="read the bundle from this bucket (and key prefix), with -p "
                        "or -m NAME and -k")  # fmt: skip
    source.add_argument("-i", "--image", metavar="PATH", type=existing_file,
                        help="a raw image file instead of a bundle")  # fmt: skip
    opt = parser.add_argument
    opt(
        "-p",
        "--prefix",
        metavar="NAME",
        help="with -b: the bundle's name, NAME.manifest.xml (default: image)",
    )
    opt(
        "--s3-url",
        metavar="URL",
        type=endpoint_url,
        help="with -b: S3's endpoint (default: boto3's configuration, else AWS)",
    )
    opt(
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="your RSA private key (of the certificate the bundle was made for); with -m or -b",
    )
    opt(
        "--source",
        metavar="DIR",
        type=existing_dir,
        help="where the parts are (default: the manifest's folder)",
    )
    opt(
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="check the manifest signature with this certificate first",
    )
    opt(
        "--size",
        metavar="GIB",
        type=integer,
        help="the snapshot's volume size in GiB (default: the disk's, rounded up)",
    )
    opt("--description", metavar="TEXT", help="the snapshot's description")
    opt(
        "--tag",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a tag for the snapshot (repeatable)",
    )
    opt("--encrypted", action="store_true", help="encrypt the snapshot (default KMS key)")
    opt(
        "--kms-key-id",
        metavar="ARN",
        help="encrypt with this KMS key, given as its ARN (implies --encrypted)",
    )
    opt(
        "--timeout",
        metavar="MINUTES",
        type=integer,
        default=60,
        help="EBS gives up a snapshot that gets no write for this long (10-4320; default 60)",
    )
    opt(
        "--client-token",
        metavar="TOKEN",
        help="StartSnapshot's idempotency token (default: a new one each run)",
    )
    opt(
        "--make-bootable",
        action="store_true",
        help="write a partitioned disk with GRUB that boots the image's own kernel (HVM)",
    )
    opt(
        "--partition",
        metavar="TYPE",
        type=choice_prefix(["gpt", "mbr"]),
        default="gpt",
        help="the bootable disk's partition table: gpt (default) or mbr",
    )
    opt(
        "--boot-mode",
        metavar="MODE",
        type=choice_prefix(["legacy-bios", "uefi"]),
        default="legacy-bios",
        help="legacy-bios (default) or uefi (GPT only)",
    )
    opt(
        "--arch",
        metavar="ARCH",
        help="the image's architecture for the registration report of -i (default: this machine's)",
    )
    opt(
        "--work-dir",
        metavar="DIR",
        type=existing_dir,
        help="where --make-bootable keeps the file system of -m while it streams "
        "(default: $TMPDIR)",
    )
    opt("--wait", action="store_true", help="return once the snapshot is completed")
    opt(
        "--register",
        metavar="NAME",
        help="register an EBS-backed AMI of the snapshot named NAME (implies --wait); "
        "--description and --tag apply to it too",
    )
    opt(
        "--jobs",
        metavar="N",
        type=jobs,
        default=DEFAULT_JOBS,
        help=f"blocks written at once (default: {DEFAULT_JOBS})",
    )
    opt(
        "--retry",
        metavar="N",
        type=attempts,
        default=S3Settings().attempts,
        help="tries per request on throttling, server errors and dropped connections "
        f"(default: {S3Settings().attempts}; a block then gets more rounds of its own)",
    )
    opt("--profile", metavar="NAME", help="use this profile of ~/.aws/config")
    opt(
        "--region",
        metavar="REGION",
        type=region_name,
        help="the region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's, us-east-1)",
    )
    opt("--ebs-url", metavar="URL", type=endpoint_url, help="the EBS direct APIs' endpoint")
    opt(
        "--ec2-url",
        metavar="URL",
        type=endpoint_url,
        help="EC2's endpoint (snapshot states for --wait, deletion after a failure, --register)",
    )
    opt("--json", action="store_true", help="print a JSON summary")
    add_progress_option(parser)
    add_common_options(parser)
    exclusive(parser, "--manifest", "--image")
    exclusive(parser, "--bucket", "--image")
    add_check(parser, _check)
    parser.param_dests.update(
        {
            "size_gib": "size",
            "tags": "tag",
            "kms_key_arn": "kms_key_id",
            "timeout_minutes": "timeout",
            "attempts": "retry",
            "architecture": "arch",
            "name": "register",
            "manifest_name": "manifest",
            "bucket": "bucket",
        }
    )
    return parser


def _check(args: argparse.Namespace) -> None:
    if args.manifest is None and args.image is None and args.bucket is None:
        raise UsageError("missing mandatory option: give one of --manifest, --bucket or --image")
    if args.bucket is not None:
        _check_bucket(args)
    elif args.manifest is not None:
        _check_local(args)
    if args.image is not None:
        for flag, given in (("--privatekey", args.privatekey), ("--source", args.source),
                            ("--cert", args.cert), ("--work-dir", args.work_dir)):  # fmt: skip
            if given is not None:
                raise UsageError(f"{flag} is for a bundle (-m), not an image file (-i)")
    if not args.make_bootable:
        for flag, dest, default in (("--partition", "partition", "gpt"),
                                    ("--boot-mode", "boot_mode", "legacy-bios")):  # fmt: skip
            if getattr(args, dest) != default:
                raise UsageError(f"{flag} needs --make-bootable")
    if args.register is not None:
        # A bad AMI name is refused before a snapshot is written, not after.
        check_image_name(args.register, description=args.description,
                         tags=[parse_tag(tag) for tag in args.tag])  # fmt: skip


def _check_local(args: argparse.Namespace) -> None:
    try:
        args.manifest = existing_file(args.manifest)
    except argparse.ArgumentTypeError as err:
        raise UsageError(f"invalid value for --manifest: {err}") from None
    if args.privatekey is None:
        raise UsageError("missing mandatory option --privatekey (the bundle's key, for -m)")
    for flag, given in (("--prefix", args.prefix), ("--s3-url", args.s3_url)):
        if given is not None:
            raise UsageError(f"{flag} is for a bundle in a bucket (-b)")


def _check_bucket(args: argparse.Namespace) -> None:
    args.bucket_ref = bucket_ref(args.bucket)
    check_bundle_names(args)
    if args.privatekey is None:
        raise UsageError("missing mandatory option --privatekey (the bundle's key, for -b)")
    if args.source is not None:
        raise UsageError("--source is for a local bundle (-m PATH), not one in a bucket (-b)")


def run(args: argparse.Namespace, style: Style) -> int | None:
    settings = S3Settings(
        profile=args.profile, region=args.region, attempts=args.retry, jobs=args.jobs
    )
    spec = SnapshotSpec(
        size_gib=args.size,
        description=args.description,
        tags=tuple(parse_tag(tag) for tag in args.tag),
        encrypted=args.encrypted,
        kms_key_arn=args.kms_key_id,
        timeout_minutes=args.timeout,
        client_token=args.client_token,
    )
    bootable = (
        BootableSpec(partition=args.partition, boot_mode=args.boot_mode)
        if args.make_bootable
        else None
    )
    common = {"settings": settings, "snapshot": spec, "bootable": bootable,
              "ebs_url": args.ebs_url, "ec2_url": args.ec2_url,
              "wait": args.wait or args.register is not None}  # fmt: skip
    with progress_for(args) as progress:
        if args.bucket is not None:
            result = s3_bundle_to_snapshot(
                args.bucket_ref, manifest_name=manifest_name(args), private_key=args.privatekey,
                cert=args.cert, work_dir=args.work_dir, prefetch=min(args.jobs, PREFETCH),
                progress=progress,
                # The S3 endpoint rides in the settings; EBS and EC2 have their own.
                **{**common, "settings": replace(settings, endpoint_url=args.s3_url)},
            )  # fmt: skip
        elif args.manifest is not None:
            result = bundle_to_snapshot(
                args.manifest, private_key=args.privatekey, source=args.source, cert=args.cert,
                work_dir=args.work_dir, progress=progress, **common,
            )  # fmt: skip
        else:
            result = image_to_snapshot(
                args.image, architecture=args.arch, progress=progress, **common
            )
    image = _register(args, settings, result) if args.register is not None else None
    if args.json:
        print_json({**result.to_dict(), "image": image.to_dict() if image else None})
    else:
        _summary(result, image)
    return None


def _register(
    args: argparse.Namespace, settings: S3Settings, result: SnapshotResult
) -> RegisteredImage:
    return register_snapshot(
        result, args.register, description=args.description,
        tags=[parse_tag(tag) for tag in args.tag], settings=settings, ec2_url=args.ec2_url,
    )  # fmt: skip


def _summary(result: SnapshotResult, image: RegisteredImage | None) -> None:
    disk = result.bootable
    kind = (
        f"bootable {disk.partition.value.upper()} disk, {disk.boot_mode.value}"
        if disk
        else "partitionless image"
    )
    print(
        f"Snapshot {result.snapshot_id} ({result.volume_size} GiB, {kind}, {result.state}): "
        f"{plural(result.blocks_written, 'block')} written ({human_size(result.bytes_sent)}) in "
        f"{result.seconds:.1f} s{rate_note(result.bytes_sent, result.seconds)}"
    )
    if image is not None:
        print(
            f"Registered {image.image_id} ({image.name!r}, {image.region}) on {image.snapshot_id}"
        )
        return
    words = result.registration.aws_command(result.region)
    print(f"To register an AMI of it: {shlex.join(words)}")
