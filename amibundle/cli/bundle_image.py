"""``amibundle bundle-image`` / ``ec2-bundle-image``: bundle an image file."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from amibundle.bundling import BundleResult, bundle_image
from amibundle.cli._common import Announcements, command_parser, human_size, print_json, rate
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_common_options,
    mandatory,
)
from amibundle.cli._progress import TqdmProgress
from amibundle.cli._prompt import ask_value, confirm
from amibundle.cli._values import existing_dir, existing_file, integer
from amibundle.compression import DEFAULT_LEVELS, Compression, default_threads
from amibundle.format.manifest import DEFAULT_PART_SIZE
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import Codec
from amibundle.validate import check_image_size, detect_architecture

__all__ = ["CLASSIC_LONGS", "build_parser", "run"]

DESCRIPTION = (
    "Bundle an image file for EC2: tar, gzip, AES-128-CBC, 10 MiB parts and a "
    "signed manifest, written to the destination folder."
)
MANUAL = f"""{DESCRIPTION}

The image is read once; holes of a sparse image are never read. Parts are written
under temporary names and appear, manifest last, only when the bundle is complete.
The bundle key is encrypted for your certificate (-c) and for EC2's (--ec2cert, or
found as the README's "EC2 certificates" section describes).

Example:
  ec2-bundle-image -i root.img -c cert.pem -k pk.pem -u 1234-5678-9012 -r x86_64 -d out/
"""
KNOWN_ARCHITECTURES = ("i386", "x86_64")
# The classic tool's long options (classic-cli.md §1.3, §2.2): their unique
# prefixes keep their meaning in ec2-bundle-image whatever we add.
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--cert",
    "--privatekey",
    "--user",
    "--image",
    "--destination",
    "--ec2cert",
    "--arch",
    "--productcodes",
    "--no-size-checks",
    "--kernel",
    "--ramdisk",
    "--block-device-mapping",
    "--prefix",
)


def add_key_options(
    parser: OptionParser,
    *,
    waived_by: str | None = None,
    user_from_sts: bool = False,
    region: bool = True,
) -> None:
    """-c/-k/-u/--ec2cert/--region: shared with bundle-vol, where ``waived_by``
    (``clone_only``) makes -c/-k/-u optional. The S3 commands look the
    account up with STS when -u is missing (``user_from_sts``) and have a
    --region of their own (``region=False``)."""
    unless = (waived_by,) if waived_by else ()
    mandatory(
        parser,
        "-c",
        "--cert",
        metavar="PATH",
        type=existing_file,
        unless=unless,
        help="your PEM X.509 certificate; its key receives a copy of the bundle key",
    )
    mandatory(
        parser,
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        unless=unless,
        help="your PEM RSA private key; signs the manifest",
    )
    if user_from_sts:
        parser.add_argument(
            "-u",
            "--user",
            metavar="ACCOUNT",
            help="your 12-digit AWS account number (dashes allowed; default: the account "
            "of the AWS credentials, from STS)",
        )
    else:
        mandatory(
            parser,
            "-u",
            "--user",
            metavar="ACCOUNT",
            unless=unless,
            help="your 12-digit AWS account number (dashes allowed)",
        )
    parser.add_argument(
        "--ec2cert",
        metavar="PATH",
        type=existing_file,
        help="EC2's certificate (default: found by region, see README)",
    )
    if region:
        parser.add_argument(
            "--region",
            metavar="REGION",
            help="picks the EC2 certificate: us-gov-* and cn-* have their own "
            "(default: $AWS_REGION)",
        )


def add_manifest_options(parser: OptionParser) -> None:
    """Manifest metadata: shared with bundle-vol."""
    parser.add_argument(
        "-r",
        "--arch",
        metavar="ARCH",
        help="i386 or x86_64 (default: this machine's, asked for interactively)",
    )
    parser.add_argument(
        "--productcodes",
        metavar="CODES",
        help="comma-separated product codes, one manifest entry each",
    )
    parser.add_argument("--kernel", metavar="ID", help="default kernel id (aki-...)")
    parser.add_argument("--ramdisk", metavar="ID", help="default ramdisk id (ari-...)")
    parser.add_argument(
        "-B",
        "--block-device-mapping",
        metavar="MAPS",
        action="append",
        default=[],
        help="virtual=device pairs, comma-separated, e.g. "
        "ami=sda1,root=/dev/sda1,ephemeral0=sdb (repeatable)",
    )
    parser.add_argument(
        "--no-size-checks",
        action="store_true",
        help="allow images over EC2's 10 GiB limit (for other clouds)",
    )


def add_output_options(parser: OptionParser) -> None:
    """Our additions to the classic flags."""
    parser.add_argument(
        "--part-size",
        metavar="BYTES",
        type=integer,
        default=DEFAULT_PART_SIZE,
        help="size of each part (default: 10 MiB, what EC2 expects)",
    )
    parser.add_argument(
        "--threads",
        metavar="N",
        type=integer,
        default=default_threads(),
        help="compression threads (default: all cores)",
    )
    parser.add_argument(
        "--compress",
        choices=[c.value for c in Compression],
        default="gzip",
        help="gzip (default; the only one EC2 accepts) or zstd (faster, for "
        "bundles that never go to EC2)",
    )
    parser.add_argument(
        "--compress-level",
        metavar="N",
        type=integer,
        default=None,
        help="gzip: 1 (fastest) to 9 (smallest), default "
        f"{DEFAULT_LEVELS[Compression.GZIP]} (parts within 15%% of gzip -9); "
        f"zstd: 1 to 22, default {DEFAULT_LEVELS[Compression.ZSTD]}",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing bundle of the same name"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    mandatory(
        parser, "-i", "--image", metavar="PATH", type=existing_file, help="the image file to bundle"
    )
    add_key_options(parser)
    parser.add_argument(
        "-d",
        "--destination",
        metavar="DIR",
        type=existing_dir,
        default=Path("/tmp"),
        help="where parts and manifest are written (default: /tmp)",
    )
    parser.add_argument(
        "-p",
        "--prefix",
        metavar="NAME",
        help="bundle file names and image name (default: the image's name)",
    )
    add_manifest_options(parser)
    parser.add_argument(
        "--image-type",
        choices=["machine", "kernel", "ramdisk"],
        default="machine",
        help="what the image is (default: machine)",
    )
    parser.add_argument(
        "--kernel-name", metavar="NAME", help="for --image-type kernel: the kernel's name"
    )
    add_output_options(parser)
    add_common_options(parser)
    if style is Style.CLASSIC:
        parser.keep_classic_abbreviations(CLASSIC_LONGS)
    return parser


def choose_architecture(args: argparse.Namespace) -> str:
    """-r, else the detected one (offered for change unless --batch); an
    unusual value must be confirmed, as with the classic tools."""
    arch: str = args.arch or ask_value(
        "Please specify a value for arch", detect_architecture(), batch=args.batch
    )
    if arch not in KNOWN_ARCHITECTURES:
        confirm(
            f"warning: architecture {arch!r} is not one of {', '.join(KNOWN_ARCHITECTURES)}",
            "Are you sure you want to continue?",
            batch=args.batch,
        )
    return arch


def codec_of(args: argparse.Namespace, notes: Announcements) -> Codec:
    compression = Compression(args.compress)
    if compression is Compression.ZSTD:
        notes.add(
            "warning: zstd bundles cannot be registered in EC2; use them only elsewhere",
            stderr=True,
        )
    return Codec(compression, args.compress_level, args.threads)


def note_missing_mappings(mappings: list[str], notes: Announcements) -> None:
    given = {item.split("=", 1)[0].strip() for value in mappings for item in value.split(",")}
    for name in ("ami", "root"):
        if mappings and name not in given:
            notes.add(
                f"note: the block device mapping has no {name!r} entry; EC2 applies a "
                "default at launch"
            )


def checked_metadata(
    args: argparse.Namespace, *, image_type: str = "machine", kernel_name: str | None = None
) -> tuple[BundleMetadata, BundleKeys]:
    """Every manifest field and key checked first; only then is the
    architecture asked for (a question is output too, and must not come
    before an error about another argument)."""
    metadata = metadata_of(
        args, args.arch or detect_architecture(), image_type=image_type, kernel_name=kernel_name
    )
    keys = keys_of(args)
    return replace(metadata, architecture=choose_architecture(args)), keys


def keys_of(args: argparse.Namespace) -> BundleKeys:
    """-c, -k, --ec2cert and --region, loaded and checked."""
    return BundleKeys.load(
        cert=args.cert, private_key=args.privatekey, ec2_cert=args.ec2cert, region=args.region
    )


def metadata_of(
    args: argparse.Namespace,
    arch: str,
    *,
    image_type: str = "machine",
    kernel_name: str | None = None,
) -> BundleMetadata:
    """What the manifest will say, from the manifest options shared with bundle-vol."""
    return BundleMetadata.create(
        user=args.user,
        arch=arch,
        image_type=image_type,
        kernel_name=kernel_name,
        kernel_id=args.kernel,
        ramdisk_id=args.ramdisk,
        product_codes=[args.productcodes] if args.productcodes else [],
        block_device_mapping=args.block_device_mapping,
    )


def report(result: BundleResult, *, json_output: bool, tool: str) -> None:
    if json_output:
        print_json(result.to_dict())
        return
    for path in result.part_paths:
        print(f"Created {path.name}")
    print(f"Created {result.manifest_path.name}")
    print(
        f"{tool} complete: {len(result.part_paths)} parts, {human_size(result.bundled_size)} "
        f"in {result.manifest_path.parent} in {result.seconds:.1f} s "
        f"({rate(result.data_size, result.seconds)} of image data)"
    )


def check_image(args: argparse.Namespace) -> None:
    """The image's size, before any question or line is printed (the library
    checks it again as it opens the image)."""
    try:
        size = Path(args.image).stat().st_size
    except OSError:
        return  # the library reports it
    check_image_size(size, size_checks=not args.no_size_checks)


def run(args: argparse.Namespace, style: Style) -> int | None:
    check_image(args)
    metadata, keys = checked_metadata(
        args, image_type=args.image_type, kernel_name=args.kernel_name
    )
    notes = Announcements()
    if not args.json:
        notes.add(f"Bundling {args.image} into {args.destination} ...")
    note_missing_mappings(args.block_device_mapping, notes)
    codec = codec_of(args, notes)
    with TqdmProgress(quiet=args.quiet or args.json) as progress:
        result = bundle_image(
            args.image,
            metadata=metadata,
            keys=keys,
            destination=args.destination,
            prefix=args.prefix,
            size_checks=not args.no_size_checks,
            part_size=args.part_size,
            codec=codec,
            force=args.force,
            progress=notes.progress(progress),
        )
    report(
        result,
        json_output=args.json,
        tool="ec2-bundle-image" if style is Style.CLASSIC else "bundle-image",
    )
    return None
