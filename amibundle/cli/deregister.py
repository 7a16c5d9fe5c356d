"""``amibundle deregister AMI-ID [--delete-bundle]``: an AMI out of EC2, and
its bundle out of S3."""

from __future__ import annotations

import argparse

from amibundle.cli._aws import add_ec2_url
from amibundle.cli._common import command_parser, plural, print_json
from amibundle.cli._options import OptionParser, Style
from amibundle.cli._s3options import add_s3_options, check_common, finish_s3_parser, settings_from
from amibundle.ec2.deregister import DeregisterResult, deregister_image

__all__ = ["build_parser", "run"]

DESCRIPTION = "Deregister an AMI; with --delete-bundle also delete its bundle from S3."
MANUAL = f"""{DESCRIPTION}

With --delete-bundle the image must be instance-store. Its manifest (the image's
location) is read before anything changes; then the image is deregistered and the
bundle deleted as 'amibundle delete' does: the manifest first, then exactly the
parts it lists, nothing else under the prefix.

Examples:
  amibundle deregister ami-0123456789abcdef0
  amibundle deregister ami-0123456789abcdef0 --delete-bundle --region eu-west-1
"""


def build_parser(style: Style, prog: str) -> OptionParser:
    parser = command_parser(
        prog, style, description=DESCRIPTION, manual=MANUAL, usage="%(prog)s AMI-ID [options]"
    )
    parser.add_argument("image_id", metavar="AMI-ID", help="the image to deregister")
    parser.add_argument(
        "--delete-bundle",
        action="store_true",
        help="also delete the bundle the image was registered from",
    )
    add_s3_options(parser, bucket=False)
    add_ec2_url(parser)
    return finish_s3_parser(parser, style, (), lambda args: check_common(args, bucket=False))


def report(result: DeregisterResult, *, json_output: bool) -> None:
    if json_output:
        print_json(result.to_dict())
        return
    print(f"Deregistered {result.image_id} ({result.name}) in {result.region}")
    if result.deleted_keys:
        print(
            f"Deleted its bundle: {plural(len(result.deleted_keys), 'object')} at "
            f"s3://{result.image_location}"
        )


def run(args: argparse.Namespace, style: Style) -> int | None:
    result = deregister_image(
        args.image_id,
        settings=settings_from(args),
        ec2_endpoint_url=args.ec2_url,
        delete_bundle=args.delete_bundle,
    )
    report(result, json_output=args.json)
    return None
