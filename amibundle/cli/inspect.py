"""``amibundle inspect``: show what a manifest says."""

from __future__ import annotations

import argparse

from amibundle.checking import ManifestReport, inspect_manifest
from amibundle.cli._common import command_parser, human_size, print_json
from amibundle.cli._options import OptionParser, Style, add_common_options, mandatory
from amibundle.cli._values import existing_file

__all__ = ["build_parser", "run"]

DESCRIPTION = "Show what a bundle manifest says; with -c, whether its signature holds."


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=DESCRIPTION)
    mandatory(
        parser, "-m", "--manifest", metavar="PATH", type=existing_file, help="the manifest file"
    )
    parser.add_argument(
        "-c",
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="check the signature with this certificate",
    )
    parser.add_argument("--json", action="store_true", help="print as JSON")
    add_common_options(parser)
    return parser


def rows(report: ManifestReport) -> list[tuple[str, str]]:
    m = report.manifest
    table = [
        ("manifest", str(report.manifest_path)),
        ("version", m.version),
        (
            "bundler",
            " ".join(filter(None, [m.bundler.name, m.bundler.version, m.bundler.release]))
            if m.bundler
            else "-",
        ),
        ("name", m.name),
        ("type", m.image_type or "-"),
        ("kernel name", m.kernel_name or "-"),
        ("architecture", m.architecture or "-"),
        ("account", m.user),
        ("image size", f"{m.size} ({human_size(m.size)})"),
        ("bundled size", f"{m.bundled_size} ({human_size(m.bundled_size)})"),
        ("image digest", f"SHA1 {m.digest}"),
        ("kernel", m.kernel_id or "-"),
        ("ramdisk", m.ramdisk_id or "-"),
        ("product codes", ", ".join(m.product_codes) or "-"),
        ("ancestry", ", ".join(m.ancestry) or "-"),
        (
            "block devices",
            ", ".join(f"{b.virtual}={b.device}" for b in m.block_device_mapping) or "-",
        ),
        ("parts", str(len(m.parts))),
    ]
    table += [(f"  {p.index}", f"{p.filename}  SHA1 {p.digest}") for p in m.parts]
    if report.signature_valid is not None:
        table.append(
            (
                "signature",
                "valid" if report.signature_valid else f"INVALID: {report.signature_problem}",
            )
        )
    return table


def run(args: argparse.Namespace, style: Style) -> int | None:
    report = inspect_manifest(args.manifest, cert=args.cert)
    if args.json:
        print_json(report.to_dict())
    else:
        table = rows(report)
        width = max(len(label) for label, _ in table)
        for label, value in table:
            print(f"{label:<{width}}  {value}")
    return 1 if report.signature_valid is False else None
