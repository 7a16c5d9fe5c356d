"""Options and steps the commands that go all the way to EC2 share:
bundle-upload, install, register, deregister, download-unbundle, and
bundle-vol --bucket.

* ``--ec2-url``: EC2's endpoint (``--url`` is S3's); both win over boto3's
  configuration (AWS_ENDPOINT_URL_EC2 / _S3 / AWS_ENDPOINT_URL, a profile's
  endpoint_url), which wins over AWS.
* The account for ``-u``: given, else STS GetCallerIdentity with the same
  credentials; with no credentials at all, the classic "missing --user".
* The registration options of register and install, and how a streamed
  upload's leftovers are listed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from amibundle import s3
from amibundle.cli._options import OptionParser
from amibundle.cli._s3options import endpoint_url
from amibundle.cli._values import integer
from amibundle.ec2.account import caller_account, has_credentials
from amibundle.ec2.registration import (
    ARCHITECTURES,
    BootMode,
    ImageRegistration,
    VirtualizationType,
)
from amibundle.errors import LeftoversError, UsageError

__all__ = [
    "REGISTRATION_DESTS",
    "account_of",
    "add_ec2_url",
    "add_registration_options",
    "print_leftovers",
    "registration_of",
    "tag",
]

# Library parameters of ImageRegistration and their option destinations.
REGISTRATION_DESTS = {
    "ena_support": "ena",
    "sriov_net_support": "sriov",
    "tags": "tag",
    "block_device_mappings": "block_device_mapping",
    "registration": "name",
}


def add_ec2_url(parser: OptionParser) -> None:
    parser.add_argument(
        "--ec2-url",
        metavar="URL",
        type=endpoint_url,
        help="EC2 endpoint (default: $AWS_ENDPOINT_URL_EC2, $AWS_ENDPOINT_URL, the "
        "profile's endpoint_url, else AWS)",
    )


def tag(value: str) -> tuple[str, str]:
    """``--tag KEY=VALUE`` (the value may be empty)."""
    key, equals, text = value.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{value!r}: expected KEY=VALUE")
    return key, text


def _seconds(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: needs at least 1 second")
    return number


def add_registration_options(
    parser: OptionParser, *, mapping_flags: Sequence[str], from_manifest_options: bool
) -> None:
    """-n and what RegisterImage takes. ``mapping_flags`` spell the API
    mapping option (``-b`` is the bucket in install); with
    ``from_manifest_options`` the architecture, kernel and ramdisk come from
    the bundle options (install), so they are not declared again."""
    parser.mandatory_group.add_argument(
        "-n",
        "--name",
        metavar="NAME",
        help="the AMI's name: 3-128 letters, digits, spaces and ( ) [ ] . / - ' @ _",
    )
    parser.add_argument("--description", metavar="TEXT", help="the AMI's description")
    if not from_manifest_options:
        parser.add_argument(
            "--architecture",
            metavar="ARCH",
            choices=ARCHITECTURES,
            help=f"{', '.join(ARCHITECTURES)} (default: the manifest's)",
        )
        parser.add_argument("--kernel", metavar="ID", help="kernel id (aki-...; default: the "
                            "manifest's); makes the image paravirtual")  # fmt: skip
        parser.add_argument("--ramdisk", metavar="ID", help="ramdisk id (ari-...; default: the "
                            "manifest's)")  # fmt: skip
    parser.add_argument(
        "--virtualization-type",
        choices=[v.value for v in VirtualizationType],
        help="default: paravirtual when a kernel is named (given or in the manifest), else hvm",
    )
    parser.add_argument(
        "--root-device-name",
        metavar="DEVICE",
        help="e.g. /dev/sda1 (default: the manifest's root mapping, else EC2's /dev/sda1)",
    )
    parser.add_argument(
        *mapping_flags,
        metavar="MAP",
        dest="block_device_mapping_api",
        action="append",
        default=[],
        help="a block device mapping beyond the manifest's: DEVICE=ephemeralN, DEVICE=none "
        "or DEVICE=[SNAPSHOT]:[SIZE]:[DELETE]:[TYPE]:[IOPS] (repeatable)",
    )
    parser.add_argument(
        "--boot-mode", choices=[m.value for m in BootMode], help="legacy-bios, uefi or "
        "uefi-preferred (hvm only; default: EC2's)",
    )  # fmt: skip
    parser.add_argument("--ena", action="store_true", help="ENA networking (hvm only)")
    parser.add_argument(
        "--sriov", action="store_true", help="SR-IOV (Intel 82599 VF) networking (hvm only)"
    )
    parser.add_argument(
        "--tag", metavar="KEY=VALUE", type=tag, action="append", default=[],
        help="tag the AMI (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--wait", action="store_true", help="wait until the AMI is available; exit 1 if it fails"
    )
    parser.add_argument(
        "--wait-timeout", metavar="SECONDS", type=_seconds, default=3600,
        help="give up waiting after SECONDS (default: 3600)",
    )  # fmt: skip
    parser.param_dests.update(REGISTRATION_DESTS)
    parser.param_dests["block_device_mappings"] = "block_device_mapping_api"


def registration_of(args: argparse.Namespace, *, own_kernel: bool) -> ImageRegistration:
    """The registration the options describe. ``own_kernel``: --architecture,
    --kernel and --ramdisk are registration options (register), not the
    manifest's (install, where the manifest carries them to EC2)."""
    if not args.name:
        raise UsageError("missing mandatory option --name")
    return ImageRegistration.create(
        name=args.name,
        description=args.description,
        architecture=args.architecture if own_kernel else None,
        virtualization_type=args.virtualization_type,
        kernel_id=args.kernel if own_kernel else None,
        ramdisk_id=args.ramdisk if own_kernel else None,
        root_device_name=args.root_device_name,
        block_device_mappings=args.block_device_mapping_api,
        boot_mode=args.boot_mode,
        ena_support=args.ena,
        sriov_net_support=args.sriov,
        tags=args.tag,
    )


def account_of(args: argparse.Namespace, settings: s3.S3Settings) -> str:
    """``-u``, else the account of the AWS credentials (STS)."""
    if args.user:
        return str(args.user)
    if not has_credentials(settings):
        raise UsageError(
            "missing mandatory option --user",
            hint="without --user the account is looked up with STS, which needs AWS "
            "credentials (-a/-s, the environment, a profile or an instance role)",
        )
    return caller_account(settings)


def print_leftovers(err: LeftoversError) -> None:
    """The keys a failed streamed upload left behind, one a line on stderr,
    before the error line itself."""
    print(f"objects left in bucket {err.bucket}:", file=sys.stderr)
    for key in err.keys:
        print(f"  s3://{err.bucket}/{key}", file=sys.stderr)
    if err.uncertain:
        print("objects whose upload failed, which may be there too:", file=sys.stderr)
        for key in err.uncertain:
            print(f"  s3://{err.bucket}/{key} (maybe)", file=sys.stderr)
