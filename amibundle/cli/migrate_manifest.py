"""``amibundle migrate-manifest`` / ``ec2-migrate-manifest``: a local manifest for another
region (``classic-cli.md`` §8)."""

from __future__ import annotations

import argparse

from amibundle.cli._common import command_parser, print_json
from amibundle.cli._migrate import add_mapping_options, check_credentials, choose_ids
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_check,
    add_common_options,
    mandatory,
)
from amibundle.cli._values import existing_file
from amibundle.errors import UsageError
from amibundle.identity import BundleKeys
from amibundle.migration import MigrationResult, migrate_manifest, read_for_migration

__all__ = ["CLASSIC_LONGS", "DESCRIPTION", "MANUAL", "build_parser", "run"]

DESCRIPTION = (
    "Rewrite a bundle's manifest for another region: its kernel and ramdisk, EC2's copy of "
    "the bundle key, version 2007-10-10, signed again."
)
CLASSIC_LONGS = (
    *CLASSIC_COMMON_LONGS,
    "--cert",
    "--privatekey",
    "--manifest",
    "--access-key",
    "--secret-key",
    "--ec2cert",
    "--kernel",
    "--ramdisk",
    "--no-mapping",
    "--region",
)
MANUAL = f"""{DESCRIPTION}

The manifest's signature is checked with -c first. Unless --no-mapping, its kernel and
ramdisk are mapped to --region through EC2: each id is looked up where it is
(DescribeImages, region by region, or --source-region), and its match in the target
region is the image of the same owner and type with the same manifest key.
--kernel/--ramdisk win over mapped ids. A kernel or ramdisk the new manifest would lose,
and ids the target region does not know, are warned about and must be confirmed
(--batch: yes; from stdin otherwise, end of input meaning no: exit 8).

The new manifest is version 2007-10-10 (older ones are upgraded), signed with -k, and
EC2's copy of the bundle key is wrapped again for the EC2 certificate of the target
region (--ec2cert, else cert-ec2-gov.pem for us-gov-*, cert-ec2-cn-north-1.pem for cn-*,
cert-ec2.pem otherwise; found as bundle-image finds it), unwrapped from your copy with
-k. (The classic tools copied it unchanged, leaving the bundle readable only where it
was made.) The original is kept as MANIFEST.bak; an existing backup stops the command
before anything is written (classic exit 2). Exit 6: an id cannot be mapped; 7: EC2
cannot be asked (an unknown region, refused credentials).

Credentials for EC2: -a/-s, else the standard AWS chain.

Examples:
  ec2-migrate-manifest -m root.img.manifest.xml -c cert.pem -k pk.pem -a AKIA... -s ... \\
      --region eu-west-1
  amibundle migrate-manifest -m root.img.manifest.xml -c cert.pem -k pk.pem --no-mapping \\
      --kernel aki-12345678 --region us-gov-west-1
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    mandatory(
        parser,
        "-m",
        "--manifest",
        metavar="PATH",
        type=existing_file,
        help="the manifest to rewrite in place",
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
    parser.add_argument(
        "-a", "--access-key", metavar="ID", help="AWS access key id for EC2 (default: AWS chain)"
    )
    parser.add_argument("-s", "--secret-key", metavar="KEY", help="AWS secret access key")
    parser.add_argument(
        "--ec2cert",
        metavar="PATH",
        type=existing_file,
        help="the target region's EC2 certificate (default: found by --region)",
    )
    add_mapping_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_common_options(parser)
    if style is Style.CLASSIC:
        parser.keep_classic_abbreviations(CLASSIC_LONGS)
    add_check(parser, _check)
    return parser


def _check(args: argparse.Namespace) -> None:
    """The classic order after the mandatory files: with mapping, the region, then the
    keys."""
    if not args.no_mapping and not args.region:
        raise UsageError(
            "missing mandatory option --region: it is needed for automatic mapping "
            "(or give --no-mapping)"
        )
    check_credentials(args)


def report(result: MigrationResult, lines: tuple[str, ...], region: str | None) -> None:
    print(f"Backed up {result.manifest_path} to {result.backup_path}")
    for line in lines:
        print(line)
    print(f"EC2's copy of the bundle key re-wrapped for {result.ec2_certificate}")
    ids = [f"kernel {result.kernel_id}" if result.kernel_id else "no kernel"]
    ids.append(f"ramdisk {result.ramdisk_id}" if result.ramdisk_id else "no ramdisk")
    where = f"; usable in {region}" if region else ""
    print(
        f"Migrated {result.manifest_path} (version {result.version_before} to 2007-10-10, "
        f"{', '.join(ids)}){where}"
    )


def run(args: argparse.Namespace, style: Style) -> int | None:
    keys = BundleKeys.load(
        cert=args.cert, private_key=args.privatekey, ec2_cert=args.ec2cert, region=args.region
    )
    parsed = read_for_migration(args.manifest, keys=keys)
    choice = choose_ids(parsed.manifest, args, args.region)
    result = migrate_manifest(args.manifest, keys=keys, ids=choice.ids)
    if args.json:
        print_json({**result.to_dict(), "region": args.region})
    else:
        report(result, choice.lines, args.region)
    return None
