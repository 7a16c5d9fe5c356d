"""``amibundle inspect``: show what a manifest says."""

from __future__ import annotations

import argparse

from amibundle.checking import ManifestReport, inspect_manifest
from amibundle.cli._common import command_parser, human_size, print_json
from amibundle.cli._options import OptionParser, Style, add_common_options, mandatory
from amibundle.cli._values import existing_dir, existing_file
from amibundle.format import manifest as mf
from amibundle.identity import Ec2CertificateReport, ec2_certificates

__all__ = ["build_parser", "run"]

DESCRIPTION = "Show what a bundle manifest says; with -c, whether its signature holds."
MANUAL = f"""{DESCRIPTION}

With -k/--privatekey, the start of the first part is decrypted to tell how the
stream is compressed (gzip, which EC2 reads, or zstd). --ec2cert-info shows
instead which EC2 certificate bundles are wrapped for, region by region, and
where each was found (--ec2cert, $AMIBUNDLE_EC2_CERT, the classic tools'
folders, or the certificates shipped with amibundle).

Examples:
  amibundle inspect -m out/root.img.manifest.xml -c cert.pem -k pk.pem
  amibundle inspect --ec2cert-info
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=MANUAL)
    mandatory(
        parser,
        "-m",
        "--manifest",
        metavar="PATH",
        type=existing_file,
        unless="ec2cert_info",
        help="the manifest file",
    )
    parser.add_argument(
        "-c",
        "--cert",
        metavar="PATH",
        type=existing_file,
        help="check the signature with this certificate",
    )
    parser.add_argument(
        "-k",
        "--privatekey",
        metavar="PATH",
        type=existing_file,
        help="decrypt the start of the stream with this key to show its compression",
    )
    parser.add_argument(
        "-s",
        "--source",
        metavar="DIR",
        type=existing_dir,
        help="where the parts are, for -k (default: the manifest's folder)",
    )
    parser.add_argument(
        "--ec2cert-info",
        action="store_true",
        help="show which EC2 certificate serves which regions and where it was found",
    )
    parser.add_argument(
        "--ec2cert",
        metavar="PATH",
        type=existing_file,
        help="with --ec2cert-info: the certificate bundle-image would be given",
    )
    parser.add_argument(
        "--region",
        metavar="REGION",
        help="with --ec2cert-info: mark the certificate of this region (default: $AWS_REGION)",
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
        ("compression", _compression_text(report)),
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


def _compression_text(report: ManifestReport) -> str:
    if report.compression is not None:
        readable = "EC2 reads it" if report.compression == "gzip" else "EC2 cannot read it"
        return f"{report.compression} ({readable})"
    if mf.marked_zstd(report.manifest):
        return "zstd, says the bundler element (-k to check)"
    return "- (-k to see it)"


def ec2cert_rows(report: Ec2CertificateReport) -> list[tuple[str, str]]:
    table = []
    for row in report.certificates:
        here = " (this region)" if row.applies_here else ""
        where = f"{row.path}  [{row.source}]" if row.path else f"NOT FOUND: {row.problem}"
        table.append((f"{row.regions}{here}", where))
    return table


def _print_table(table: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in table)
    for label, value in table:
        print(f"{label:<{width}}  {value}")


def run(args: argparse.Namespace, style: Style) -> int | None:
    if args.ec2cert_info:
        certs = ec2_certificates(args.ec2cert, region=args.region)
        if args.json:
            print_json(certs.to_dict())
        else:
            _print_table(ec2cert_rows(certs))
        return None if certs.ok else 1
    report = inspect_manifest(
        args.manifest, cert=args.cert, private_key=args.privatekey, source=args.source
    )
    if args.json:
        print_json(report.to_dict())
    else:
        _print_table(rows(report))
    return 1 if report.signature_valid is False else None
