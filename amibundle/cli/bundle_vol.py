"""``amibundle bundle-vol`` / ``ec2-bundle-vol``: a volume to an image, then a bundle."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from amibundle.bundling import BundleResult
from amibundle.cli._common import Announcements, command_parser, human_size, print_json
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_check,
    add_common_options,
    exclusive,
)
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._values import choice_prefix, comma_list, existing_dir, existing_file, integer
from amibundle.cli.bundle_image import (
    add_key_options,
    add_manifest_options,
    add_output_options,
    checked_metadata,
    codec_of,
    note_missing_mappings,
    report,
)
from amibundle.errors import UsageError
from amibundle.volume.boot import FIRMWARE_MODES, BootMode
from amibundle.volume.bundle import DEFAULT_SIZE_MIB, VolumeBundleResult, bundle_volume
from amibundle.volume.plan import EXT_TYPES, Builder, PartitionTable

if TYPE_CHECKING:
    from amibundle.uploading import UploadTarget

__all__ = ["CLASSIC_LONGS", "DESCRIPTION", "MANUAL", "build_parser", "run"]

DESCRIPTION = (
    "Make an image file from a volume (normally /) and bundle it, as root with a loop "
    "device or without root at all."
)
MANUAL = f"""{DESCRIPTION}

What is copied: everything below the volume (-v, default /) except /dev, /media,
/mnt, /proc, /sys, mount points of non-local file systems (unless -a), the -e
entries, this run's own outputs, and, unless --no-filter, keys, histories and
editor files (*.pem, *id_rsa*, */.ssh/authorized_keys, */.bash_history, *~, ...).
-i entries are copied whatever the rules say. Entries starting with / are
relative to the volume. Hard links, owners, modes, times, symlinks, extended
attributes, sparse files, device nodes and fifos are kept; top-level dot-files
are copied. The image gets empty mnt proc sys dev and the nodes dev/null, zero,
tty and console.

Builders (--builder, chosen automatically): "loop" (root and a loop device: mkfs,
mount, copy; any of ext2/3/4, xfs, btrfs) and "rootless" (no root, no mount:
mke2fs -d from a hard-linked staging view of the volume, then debugfs for device
nodes and owners; ext2/3/4).

Partitioned images get GRUB 2 (unless --no-bootloader) from either builder,
written into the image file without loop devices: for --boot-mode legacy-bios
(the default) the MBR and the core image (after the MBR, or in the GPT's BIOS
boot partition); for --boot-mode uefi (GPT) BOOTX64.EFI in an EFI system
partition. GRUB's modules are the volume's own (usr/lib/grub) when it has them,
else this machine's (grub-pc-bin / grub-efi-amd64-bin); /boot/grub/grub.cfg
boots the volume's newest /boot/vmlinuz-* with the root found by UUID (PARTUUID
without an initrd).

The image is -s MiB (default {DEFAULT_SIZE_MIB}, sparse) or "--size auto" (the data plus
headroom); the data is checked to fit before copying. File system type, label and
UUID are the volume's (blkid) unless --fs-type/--label say otherwise. Then the
image is bundled like bundle-image, with kernel, ramdisk, product codes, block
device mapping and ancestry inherited from the instance metadata when on EC2
(command-line values win; --no-inherit turns it off).

Examples:
  ec2-bundle-vol -k pk.pem -c cert.pem -u 123456789012 -r x86_64 -d /mnt -e /home/ec2-user
  amibundle bundle-vol -v ./rootfs --size auto --fs-type ext4 --generate-fstab=modern \\
      --no-inherit -c cert.pem -k pk.pem -u 123456789012 -r x86_64 -d out/
"""


# The classic tool's long options (classic-cli.md §1.3, §3.2).
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--cert",
    "--privatekey",
    "--user",
    "--destination",
    "--ec2cert",
    "--arch",
    "--productcodes",
    "--no-size-checks",
    "--kernel",
    "--ramdisk",
    "--block-device-mapping",
    "--all",
    "--exclude",
    "--include",
    "--no-filter",
    "--prefix",
    "--clone-only",
    "--size",
    "--inherit",
    "--no-inherit",
    "--volume",
    "--fstab",
    "--generate-fstab",
    "--grub-config",
    "--partition",
    "--script",
)


def size_value(value: str) -> int | None:
    """``-s``: MiB as a (Ruby) integer, or ``auto`` (returned as None)."""
    if value == "auto":
        return None
    try:
        return integer(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a number of MiB or auto") from None


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    # Modern: -u may come from STS when the bundle goes to S3 (--bucket).
    add_key_options(parser, waived_by="clone_only", user_from_sts=style is Style.MODERN)
    parser.add_argument(
        "-d",
        "--destination",
        metavar="DIR",
        type=parser.output_folder_type("destination"),
        default=Path("/tmp"),
        help="where the image file, parts and manifest go (default: /tmp)",
    )
    parser.add_argument(
        "-p", "--prefix", metavar="NAME", default="image", help="image file and bundle name"
    )
    parser.add_argument(
        "-v",
        "--volume",
        metavar="PATH",
        type=existing_dir,
        default=Path("/"),
        help="root of the tree to copy (default: /)",
    )
    parser.add_argument(
        "-s",
        "--size",
        metavar="MB",
        type=size_value,
        default=DEFAULT_SIZE_MIB,
        help=f"image size in MiB, or 'auto': the data plus headroom (default: {DEFAULT_SIZE_MIB})",
    )
    parser.add_argument(
        "-e",
        "--exclude",
        metavar="DIR,...",
        type=comma_list,
        action="append",
        default=[],
        help="more paths to leave out (relative to the volume when starting with /)",
    )
    parser.add_argument(
        "-i",
        "--include",
        metavar="FILE,...",
        type=comma_list,
        action="append",
        default=[],
        help="paths to copy even though an exclude or the file filter would drop them",
    )
    parser.add_argument(
        "-a",
        "--all",
        action="store_true",
        help="also copy mount points of non-local file systems (nfs, fuse, ...)",
    )
    parser.add_argument(
        "--no-filter",
        action="store_true",
        help="do not leave out keys, histories and editor files",
    )
    parser.add_argument(
        "-P",
        "--partition",
        metavar="TYPE",
        type=choice_prefix([table.value for table in PartitionTable]),
        help="none, mbr or gpt (default: the root disk's type when the volume is /, else none)",
    )
    parser.add_argument(
        "-S",
        "--script",
        metavar="PATH",
        type=_executable,
        help="run PATH <image root> on the populated image; a failure stops the run",
    )
    parser.add_argument(
        "--fstab",
        metavar="PATH",
        type=existing_file,
        help="install PATH as the image's /etc/fstab (the old one kept as fstab.old)",
    )
    parser.add_argument(
        "--generate-fstab",
        nargs="?",
        const="ec2",
        metavar="VARIANT",
        type=choice_prefix(("ec2", "default", "legacy", "modern")),
        help="install the classic EC2 fstab (legacy with -r i386), or --generate-fstab=modern: "
        "root by LABEL=/UUID= with the real type",
    )
    parser.add_argument(
        "--grub-config",
        metavar="PATH",
        type=existing_file,
        help="install PATH as the legacy GRUB menu boot/grub/menu.lst",
    )
    parser.add_argument(
        "--clone-only",
        action="store_true",
        help="only make the image file; -c, -k and -u are then not needed",
    )
    parser.add_argument(
        "--inherit",
        dest="inherit",
        action="store_const",
        const=True,
        default=None,
        help="take kernel, ramdisk, product codes, mapping and ancestry from the instance "
        "metadata; an error off EC2 (default: inherit when on EC2)",
    )
    parser.add_argument(
        "--no-inherit",
        dest="inherit",
        action="store_const",
        const=False,
        help="do not ask the instance metadata service",
    )
    add_manifest_options(parser)
    parser.add_argument(
        "--builder",
        choices=[builder.value for builder in Builder],
        default=None,
        help="loop (root, mount) or rootless (mke2fs -d + debugfs); default: loop when "
        "root with loop devices, else rootless",
    )
    parser.add_argument(
        "--fs-type",
        metavar="TYPE",
        help=f"file system type ({', '.join(EXT_TYPES)}, xfs, "
        "btrfs; default: the volume's, else ext3)",
    )
    parser.add_argument(
        "--label", metavar="LABEL", help="file system label (default: the volume's)"
    )
    parser.add_argument(
        "--no-bootloader",
        action="store_true",
        help="do not install GRUB into a partitioned image",
    )
    parser.add_argument(
        "--boot-mode",
        metavar="MODE",
        type=choice_prefix([mode.value for mode in FIRMWARE_MODES]),
        default=BootMode.LEGACY_BIOS.value,
        help="legacy-bios (default) or uefi (a GPT image with an EFI system partition); "
        "EC2's BootMode for registering the image",
    )
    parser.add_argument(
        "--keep-partial",
        action="store_true",
        help="keep the image file after a failure (and, with --bucket, the objects sent)",
    )
    add_output_options(parser)
    if style is Style.MODERN:
        add_bucket_options(parser)
    add_progress_option(parser)
    add_common_options(parser)
    if style is Style.CLASSIC:
        parser.keep_classic_abbreviations(CLASSIC_LONGS)
    exclusive(parser, "--fstab", "--generate-fstab")
    add_check(parser, _check_combinations)
    return parser


def _executable(value: str) -> Path:
    path = existing_file(value)
    if not os.access(path, os.X_OK):
        raise argparse.ArgumentTypeError(f"{value!r}: not executable")
    return path


def add_bucket_options(parser: OptionParser) -> None:
    """--bucket and the S3 options that do not clash with bundle-vol's letters
    (credentials come from the environment, a profile or the instance role)."""
    from amibundle.cli._s3options import attempts, endpoint_url, jobs
    from amibundle.cli.bundle_upload import add_upload_options

    parser.add_argument(
        "--bucket",
        metavar="BUCKET[/PREFIX]",
        help="bundle straight into this bucket (as bundle-upload) instead of -d; the "
        "image file is still built in -d",
    )
    parser.add_argument(
        "--url", metavar="URL", type=endpoint_url, help="with --bucket: S3 endpoint"
    )
    parser.add_argument("--profile", metavar="NAME", help="with --bucket: AWS profile")
    parser.add_argument(
        "--jobs", metavar="N", type=jobs, default=8, help="with --bucket: parallel uploads"
    )
    parser.add_argument(
        "--retry", metavar="N", type=attempts, default=None, help="with --bucket: attempts"
    )
    add_upload_options(parser, keep_partial=False)  # --keep-partial: ours keeps both


def _check_combinations(args: argparse.Namespace) -> None:
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size must be a positive number of MiB or auto, not {args.size}")
    if not args.clone_only and not args.user and not getattr(args, "bucket", None):
        raise UsageError("missing mandatory option --user")
    if getattr(args, "bucket", None) and (args.cert is None or args.privatekey is None):
        raise UsageError(
            "--bucket needs -c and -k: a key made for the bundle would not be kept anywhere"
        )


def fstab_variant(args: argparse.Namespace) -> str | None:
    """``--generate-fstab`` alone means the classic EC2 fstab: legacy only for
    an explicit ``-r i386``, as the classic decided."""
    value: str | None = args.generate_fstab
    if value == "ec2":
        return "legacy" if args.arch == "i386" else "default"
    return value


def run(args: argparse.Namespace, style: Style) -> int | None:
    classic = style is Style.CLASSIC
    metadata = keys = codec = None
    notes = Announcements.of(args)
    upload = _upload_target(args) if getattr(args, "bucket", None) else None
    if not args.clone_only:
        # Everything bundling needs is checked before the long copy starts
        # (the classic found a bad key only after cloning the whole volume).
        if upload is not None:
            from amibundle.cli._aws import account_of

            args.user = account_of(args, upload.settings)
            args.region = args.region or upload.settings.region  # picks EC2's certificate
        metadata, keys = checked_metadata(
            args, notes, destination=args.destination, prefix=args.prefix
        )
        note_missing_mappings(args.block_device_mapping, notes)
        codec = codec_of(args, notes)
    quiet = args.json or args.quiet

    def print_line(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    # The notes wait for the library's first step: it checks its own inputs
    # (size, paths, outputs) before that.
    say = notes.notify(print_line)
    with progress_for(args) as bars:
        progress = notes.progress(bars)
        result = bundle_volume(
            args.volume,
            metadata=metadata,
            keys=keys,
            destination=args.destination,
            prefix=args.prefix,
            size_mib=args.size,
            exclude=[item for value in args.exclude for item in value],
            include=[item for value in args.include for item in value],
            all_mounts=args.all,
            use_filter=not args.no_filter,
            partition=args.partition,
            script=args.script,
            fstab=args.fstab,
            generate_fstab=fstab_variant(args),
            grub_config=args.grub_config,
            inherit=args.inherit,
            builder=args.builder,
            fs_type=args.fs_type,
            label=args.label,
            bootloader=not args.no_bootloader,
            boot_mode=args.boot_mode,
            keep_partial=args.keep_partial,
            size_checks=not args.no_size_checks,
            force=args.force,
            part_size=args.part_size,
            codec=codec,
            progress=progress,
            notify=say,
            upload=upload,
        )
    _report(result, args, tool="ec2-bundle-vol" if classic else "bundle-vol")
    return None


def _upload_target(args: argparse.Namespace) -> UploadTarget:
    from amibundle import s3
    from amibundle.uploading import UploadTarget

    if args.clone_only:
        raise UsageError("--bucket cannot be combined with --clone-only")
    try:
        bucket = s3.parse_bucket(args.bucket)
    except UsageError as err:
        raise UsageError(f"invalid value for --bucket: {err}") from None
    options = {"attempts": args.retry} if args.retry else {}
    settings = s3.S3Settings(
        profile=args.profile, region=args.region, endpoint_url=args.url, jobs=args.jobs, **options
    )
    settings = s3.with_bucket_region(settings, bucket)
    return UploadTarget(
        bucket, settings, acl=args.acl, location=args.location, fix_ownership=args.fix_ownership
    )


def _report(result: VolumeBundleResult, args: argparse.Namespace, *, tool: str) -> None:
    if args.json:
        print_json(result.to_dict())
        return
    if result.inherited and not args.quiet:
        print(f"Inherited from the instance metadata: {', '.join(result.inherited)}")
    if isinstance(result.bundle, BundleResult):
        report(result.bundle, json_output=False, tool="bundling", quiet=args.quiet)
    elif result.bundle is not None:
        from amibundle.cli.bundle_upload import report as report_upload

        report_upload(result.bundle, json_output=False, tool="bundling")
    print(
        f"{tool} complete: {result.files_copied} entries, {human_size(result.data_bytes)} of data "
        f"into {result.image_path} ({result.builder.value} builder) in {result.seconds:.1f} s",
        file=sys.stdout,
    )
