"""What migrate-manifest and migrate-bundle share: the mapping options, choosing the new
kernel and ramdisk (with the classic's questions), and the lines that report it.

The classic rules (``classic-cli.md`` §8.1-§8.3): unless ``--no-mapping``, the
manifest's kernel and ramdisk are mapped to the target region through EC2;
``--kernel``/``--ramdisk`` win over mapped values; an id the migrated manifest would
lose must be confirmed, and so must ids the target region does not know.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from amibundle.cli._options import OptionParser
from amibundle.cli._prompt import confirm
from amibundle.cli._s3options import region_name
from amibundle.errors import UsageError
from amibundle.format.manifest import Manifest
from amibundle.kernel_mapping import Ec2Access, ImageIds, map_image_ids, missing_in_region

__all__ = ["Choice", "add_mapping_options", "check_credentials", "choose_ids", "ec2_access"]


def add_mapping_options(parser: OptionParser) -> None:
    """--kernel, --ramdisk, --no-mapping, --region, --source-region, --ec2cert."""
    parser.add_argument("--kernel", metavar="ID", help="the kernel id for the target region")
    parser.add_argument("--ramdisk", metavar="ID", help="the ramdisk id for the target region")
    parser.add_argument(
        "--no-mapping",
        action="store_true",
        help="do not ask EC2 for the kernel and ramdisk of the target region; without "
        "--kernel/--ramdisk they are dropped (after a question)",
    )
    parser.add_argument(
        "--region",
        metavar="REGION",
        type=region_name,
        help="the target region: ids are mapped to it and EC2's copy of the bundle key is "
        "wrapped for its certificate (needed for mapping)",
    )
    parser.add_argument(
        "--source-region",
        metavar="REGION",
        type=region_name,
        help="where the manifest's kernel and ramdisk are (default: every region is asked "
        "in turn, as the classic did)",
    )


@dataclass(frozen=True)
class Choice:
    """The kernel and ramdisk the migrated manifest will name, and what to say about it."""

    ids: ImageIds
    lines: tuple[str, ...]


def check_credentials(args: argparse.Namespace) -> None:
    """-a and -s go together; without both, the standard AWS chain is used."""
    if args.secret_key and not args.access_key:
        raise UsageError("missing mandatory option --access-key (it goes with --secret-key)")
    if args.access_key and not args.secret_key:
        raise UsageError("missing mandatory option --secret-key (it goes with --access-key)")


def ec2_access(args: argparse.Namespace) -> Ec2Access:
    return Ec2Access(access_key=args.access_key, secret_key=args.secret_key)


def _describe(ids: ImageIds) -> str:
    words = [f"kernel {ids.kernel_id}"] if ids.kernel_id else []
    if ids.ramdisk_id:
        words.append(f"ramdisk {ids.ramdisk_id}")
    return " and ".join(words) or "no kernel or ramdisk"


def choose_ids(manifest: Manifest, args: argparse.Namespace, target: str | None) -> Choice:
    """The new kernel and ramdisk: mapped unless --no-mapping, --kernel/--ramdisk
    winning; losing one, or naming ones the target region lacks, must be confirmed."""
    original = ImageIds(manifest.kernel_id, manifest.ramdisk_id)
    mapped = ImageIds()
    lines: list[str] = []
    mapping = not args.no_mapping and target is not None
    if mapping and original.present():
        assert target is not None
        result = map_image_ids(
            original,
            target_region=target,
            access=ec2_access(args),
            source_region=args.source_region,
        )
        mapped = result.ids
        lines.append(
            f"Mapped {_describe(original)} (found in {result.source_region}) to "
            f"{_describe(mapped)} in {target}"
        )
    final = ImageIds(args.kernel or mapped.kernel_id, args.ramdisk or mapped.ramdisk_id)
    dropped = [
        f"{what} {old}"
        for what, old, new in (
            ("kernel", original.kernel_id, final.kernel_id),
            ("ramdisk", original.ramdisk_id, final.ramdisk_id),
        )
        if old and not new
    ]
    if dropped:
        confirm(
            f"warning: the migrated manifest will lose its {' and '.join(dropped)}: the AMI "
            "will have no default for it (give --kernel/--ramdisk to keep one)",
            "Are you sure you want to continue?",
            batch=args.batch,
        )
    if mapping and final.present():
        assert target is not None
        missing = missing_in_region(final.present(), region=target, access=ec2_access(args))
        if missing:
            confirm(
                f"warning: {', '.join(missing)} not found in {target}: registering the "
                "migrated image there will fail",
                "Are you sure you want to continue?",
                batch=args.batch,
            )
    return Choice(final, tuple(lines))
