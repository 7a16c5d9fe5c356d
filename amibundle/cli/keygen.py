"""``amibundle keygen``: a private key and self-signed certificate for bundling."""

from __future__ import annotations

import argparse
from pathlib import Path

from amibundle.cli._common import command_parser, print_json
from amibundle.cli._options import OptionParser, Style, add_common_options, mandatory
from amibundle.cli._values import integer
from amibundle.identity import keygen

__all__ = ["build_parser", "run"]

DESCRIPTION = (
    "Create a 2048-bit RSA private key (mode 0600) and a self-signed X.509 certificate, "
    "for bundling outside AWS and for tests."
)


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(prog, style, description=DESCRIPTION, manual=DESCRIPTION)
    mandatory(
        parser,
        "-k",
        "--privatekey",
        metavar="PATH",
        type=Path,
        help="where to write the private key",
    )
    mandatory(
        parser, "-c", "--cert", metavar="PATH", type=Path, help="where to write the certificate"
    )
    parser.add_argument(
        "--cn",
        metavar="NAME",
        default="amibundle",
        help="the certificate's common name (default: amibundle)",
    )
    parser.add_argument(
        "--days", metavar="N", type=integer, default=3650, help="validity in days (default: 3650)"
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_common_options(parser)
    return parser


def run(args: argparse.Namespace, style: Style) -> int | None:
    result = keygen(
        args.privatekey, args.cert, common_name=args.cn, days=args.days, force=args.force
    )
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"Wrote private key {result.private_key} (mode 0600)")
        print(
            f"Wrote certificate {result.certificate} (CN={result.common_name}, "
            f"SHA-1 {result.sha1_fingerprint})"
        )
    return None
