"""``amibundle register``: an instance-store AMI from a bundle's manifest in S3."""

from __future__ import annotations

import argparse

from amibundle.cli._aws import add_ec2_url, add_registration_options, registration_of
from amibundle.cli._common import command_parser, print_json
from amibundle.cli._options import OptionParser, Style
from amibundle.cli._s3options import add_s3_options, check_common, finish_s3_parser, settings_from
from amibundle.ec2.register import RegisterResult, register_image
from amibundle.errors import UsageError

__all__ = ["build_parser", "report", "run"]

DESCRIPTION = "Register an instance-store AMI from a bundle's manifest in S3."
MANUAL = f"""{DESCRIPTION}

-m names the manifest as BUCKET/[PREFIX/]NAME.manifest.xml. It is read first (a
missing one is an error before EC2 is asked); what the options leave out comes
from it: architecture, kernel and ramdisk, the root device (its "root" mapping)
and its ephemeral block-device mappings, translated to the API's form (-b adds
more). The virtualization type is paravirtual when a kernel is named, else hvm.
--boot-mode, --ena and --sriov apply to hvm images only.

Without --region (or AWS_REGION, a profile's region) the bucket's region is used:
EC2 registers a bundle only in its bucket's region. --url is the S3 endpoint the
manifest is read from, --ec2-url EC2's.

Prints the AMI id (--json: everything, with the request as sent). --wait waits
until the AMI is available; a failed one is an error (exit 1) with EC2's reason.

Examples:
  amibundle register -m mybucket/images/root.img.manifest.xml -n "my image 2024-06" --wait
  amibundle register -m mybucket/k/root.img.manifest.xml -n pv --kernel aki-88aa75e1 \\
      -b /dev/sdb=ephemeral0 --tag team=infra
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog,
        style,
        description=DESCRIPTION,
        manual=MANUAL,
        usage="%(prog)s -m BUCKET/[PREFIX/]NAME.manifest.xml -n NAME [options]",
    )
    parser.mandatory_group.add_argument(
        "-m",
        "--manifest",
        metavar="LOCATION",
        help="the bundle's manifest in S3: BUCKET/[PREFIX/]NAME.manifest.xml",
    )
    add_registration_options(
        parser, mapping_flags=("-b", "--block-device-mapping"), from_manifest_options=False
    )
    add_s3_options(parser, bucket=False, bucket_region=True)
    add_ec2_url(parser)
    return finish_s3_parser(parser, style, (), _check)


def _check(args: argparse.Namespace) -> None:
    check_common(args, bucket=False)
    if not args.manifest:
        raise UsageError("missing mandatory option --manifest")
    if not args.name:
        raise UsageError("missing mandatory option --name")


def report(result: RegisterResult, *, json_output: bool) -> None:
    if json_output:
        print_json(result.to_dict())
    else:
        print(result.image_id)


def run(args: argparse.Namespace, style: Style) -> int | None:
    registration = registration_of(args, own_kernel=True)
    result = register_image(
        args.manifest,
        registration,
        settings=settings_from(args),
        ec2_endpoint_url=args.ec2_url,
        wait=args.wait,
        wait_timeout=args.wait_timeout,
    )
    report(result, json_output=args.json)
    return None
