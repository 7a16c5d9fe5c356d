"""``amibundle bundle-image`` / ``ec2-bundle-image``: bundle an image file."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from amibundle.bundling import BundleResult, bundle_image
from amibundle.cli._common import (
    Announcements,
    command_parser,
    human_size,
    plural,
    print_json,
    rate_note,
)
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_check,
    add_common_options,
    mandatory,
)
from amibundle.cli._progress import add_progress_option, progress_for
from amibundle.cli._prompt import ask_value, confirm
from amibundle.cli._values import existing_file, integer
from amibundle.compression import DEFAULT_LEVELS, Compression, default_threads
from amibundle.errors import UsageError
from amibundle.format.manifest import DEFAULT_PART_SIZE
from amibundle.identity import BundleKeys
from amibundle.metadata import BundleMetadata
from amibundle.pipeline import Codec
from amibundle.sources import STDIN, ImageFormat, file_format
from amibundle.validate import check_image_size, detect_architecture

__all__ = [
    "CLASSIC_LONGS",
    "add_key_options",
    "build_parser",
    "byte_size",
    "keys_of",
    "run",
]

DESCRIPTION = (
    "Bundle an image file for EC2: tar, gzip, AES-128-CBC, 10 MiB parts and a "
    "signed manifest, written to the destination folder."
)
MANUAL = f"""{DESCRIPTION}

The image is read once; holes of a sparse image are never read. Parts are written
under temporary names and appear, manifest last, only when the bundle is complete.
The bundle key is encrypted for your certificate (-c) and for EC2's (--ec2cert, or
found as the README's "EC2 certificates" section describes).

Without -c and -k, the bundle gets its own new 2048-bit key and self-signed
certificate, written beside it as <prefix>.key.pem and <prefix>.cert.pem (mode
0600): keep the key, unbundling needs it.

Any image format goes in, recognised by its content: a raw image, a gzip, bzip2,
xz or zstd-compressed one (decompressed on the fly; a first pass finds the size
and the zero runs), a qcow2, VMDK, VHD or VHDX disk (read through qemu-img), or
"-i -" for standard input (with --image-size unless the stream records it).

Examples:
  ec2-bundle-image -i root.img -c cert.pem -k pk.pem -u 1234-5678-9012 -r x86_64 -d out/
  amibundle bundle-image -i root.qcow2 -u 123456789012 -r x86_64 -d out/
  curl -s https://example.com/root.img | amibundle bundle-image -i - --image-size 8G ...
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
    (``clone_only``) makes -u optional. -c and -k go together; without both,
    :func:`keys_of` makes a key for the bundle. The S3 commands look the
    account up with STS when -u is missing (``user_from_sts``) and have a
    --region of their own (``region=False``)."""
    unless = (waived_by,) if waived_by else ()
    parser.add_argument(
        "-c",
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="your PEM X.509 certificate; its key receives a copy of the bundle key "
        "(without -c and -k: a new key and certificate are made for this bundle)",
    )
    parser.add_argument(
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="your PEM RSA private key (of -c); signs the manifest",
    )
    add_check(parser, _check_key_pair)
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


def add_image_type_options(parser: OptionParser) -> None:
    """--image-type and --kernel-name: shared with bundle-upload (a volume is a machine)."""
    parser.add_argument(
        "--image-type",
        choices=["machine", "kernel", "ramdisk"],
        default="machine",
        help="what the image is (default: machine)",
    )
    parser.add_argument(
        "--kernel-name", metavar="NAME", help="for --image-type kernel: the kernel's name"
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


def _check_key_pair(args: argparse.Namespace) -> None:
    if (args.cert is None) != (args.privatekey is None):
        given, missing = ("-c", "-k") if args.privatekey is None else ("-k", "-c")
        raise UsageError(
            f"{given} needs {missing}: give your certificate and its private key together, "
            "or neither to make a new key and certificate for this bundle"
        )


_SIZE = re.compile(r"([0-9]+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(value: str) -> int:
    """``--image-size``: bytes, or with a binary unit (``8G``, ``512MiB``)."""
    match = _SIZE.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a size in bytes, e.g. 8589934592, 8G or 512MiB"
        )
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def image_value(value: str) -> Path | str:
    """``-i``: ``-`` (standard input) or a regular file, checked at once like
    every file option (a FIFO or a device would make bundling wait; a
    directory gets a pointer at bundle-vol)."""
    if value == STDIN:
        return value
    path = Path(value)
    if not value or not path.exists():
        raise argparse.ArgumentTypeError(f"{value!r}: no such file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{value!r}: not a regular file but a directory (to bundle a tree of files, "
            "make an image of it with bundle-vol)"
        )
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value!r}: not a regular file")
    return path


def add_image_options(parser: OptionParser) -> None:
    mandatory(
        parser,
        "-i",
        "--image",
        metavar="PATH",
        type=image_value,
        help="the image to bundle: raw, gzip/bzip2/xz/zstd-compressed, qcow2, VMDK, VHD, "
        "VHDX, or - for standard input",
    )
    parser.add_argument(
        "--image-size",
        metavar="BYTES",
        type=byte_size,
        help="the image's size (8G, 512MiB, bytes): needed for standard input, checked otherwise",
    )
    parser.add_argument(
        "--image-format",
        choices=["auto", *(kind.value for kind in ImageFormat)],
        default="auto",
        help="what the image is (default: recognised by its content)",
    )


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    add_image_options(parser)
    add_key_options(parser)
    parser.add_argument(
        "-d",
        "--destination",
        metavar="DIR",
        type=parser.output_folder_type("destination"),
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
    add_image_type_options(parser)
    add_output_options(parser)
    add_progress_option(parser)
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
    args: argparse.Namespace,
    notes: Announcements,
    *,
    destination: Path,
    prefix: str,
    image_type: str = "machine",
    kernel_name: str | None = None,
) -> tuple[BundleMetadata, BundleKeys]:
    """Every manifest field and key checked first (see :func:`keys_of`);
    only then is the architecture asked for (a question is output too, and
    must not come before an error about another argument)."""
    metadata = metadata_of(
        args, args.arch or detect_architecture(), image_type=image_type, kernel_name=kernel_name
    )
    keys = keys_of(args, notes, destination=destination, prefix=prefix)
    return replace(metadata, architecture=choose_architecture(args)), keys


def keys_of(
    args: argparse.Namespace, notes: Announcements, *, destination: Path, prefix: str
) -> BundleKeys:
    """-c, -k, --ec2cert and --region, loaded and checked; without -c and -k,
    a new key and certificate for the bundle ``prefix`` (written beside it, in
    ``destination``, when it is complete), said in one note. bundle-vol uses
    it too."""
    if args.cert is None and args.privatekey is None:
        keys = BundleKeys.generate_for_bundle(
            destination,
            prefix,
            ec2_cert=args.ec2cert,
            region=args.region,
            force=getattr(args, "force", False),
        )
        assert keys.generated is not None
        notes.add(
            "note: no -c/-k given: this bundle gets its own new key and certificate, "
            f"written beside it as {keys.generated.private_key} and "
            f"{keys.generated.certificate} (keep the key: unbundling needs it)"
        )
        return keys
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


def report(result: BundleResult, *, json_output: bool, tool: str, quiet: bool = False) -> None:
    """The result: the files made (not with -q) and one summary line."""
    if json_output:
        print_json(result.to_dict())
        return
    if not quiet:
        for path in result.part_paths:
            print(f"Created {path.name}")
        print(f"Created {result.manifest_path.name}")
    print(
        f"{tool} complete: {plural(len(result.part_paths), 'part')}, "
        f"{human_size(result.bundled_size)} in {result.manifest_path.parent} in "
        f"{result.seconds:.1f} s{rate_note(result.data_size, result.seconds, 'of image data')}"
    )
    if result.generated_private_key is not None:
        print(
            f"New key {result.generated_private_key} and certificate "
            f"{result.generated_certificate}: keep the key, unbundling needs it"
        )


def check_image(args: argparse.Namespace) -> None:
    """The size of a raw image file, before any question or line is printed
    (the library checks it again as it opens the image; the image size of
    other formats is known only once the library reads them)."""
    if str(args.image) == STDIN:
        return
    path = Path(args.image)
    try:
        size = path.stat().st_size
    except OSError:
        return  # the library reports it
    if not path.is_file():
        return  # a folder, FIFO or device: the library says what it is, without reading it
    if size and _image_format(args, path) is not ImageFormat.RAW:
        return  # compressed, or a disk format: the image is not the file's size
    check_image_size(size, size_checks=not args.no_size_checks)


def _image_format(args: argparse.Namespace, path: Path) -> ImageFormat:
    if args.image_format != "auto":
        return ImageFormat(args.image_format)
    return file_format(path)


def run(args: argparse.Namespace, style: Style) -> int | None:
    check_image(args)
    default = "image" if str(args.image) == STDIN else Path(args.image).name
    prefix = args.prefix if args.prefix is not None else default
    notes = Announcements.of(args)
    metadata, keys = checked_metadata(
        args,
        notes,
        destination=args.destination,
        prefix=prefix,
        image_type=args.image_type,
        kernel_name=args.kernel_name,
    )
    if not args.json:
        notes.add(f"Bundling {args.image} into {args.destination} ...")
    note_missing_mappings(args.block_device_mapping, notes)
    codec = codec_of(args, notes)
    with progress_for(args) as progress:
        result = bundle_image(
            args.image,
            metadata=metadata,
            keys=keys,
            destination=args.destination,
            prefix=prefix,
            size_checks=not args.no_size_checks,
            part_size=args.part_size,
            codec=codec,
            force=args.force,
            image_format=None if args.image_format == "auto" else args.image_format,
            image_size=args.image_size,
            progress=notes.progress(progress),
            notify=notes.notify(),
        )
    report(
        result,
        json_output=args.json,
        tool="ec2-bundle-image" if style is Style.CLASSIC else "bundle-image",
        quiet=args.quiet,
    )
    return None
