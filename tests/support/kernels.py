"""Kernel and ramdisk images in two regions of the strict EC2 stand-in, for the
migrate commands' mapping (classic-cli.md §8.3).

Each image is registered the way AWS registered them: from a kernel (or ramdisk) bundle's
manifest in S3, which makes it an aki- (ari-) image of that type. The source region's
images come from bucket ``kernels-src``, the target's from ``kernels-dst`` under the same
keys (the classic matched owner, type and the manifest key); decoys in the target region
share the key but not the type, or the type but not the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from tests.support.aws import AwsStandIn

__all__ = ["KernelPair", "ec2_client", "kernels_in_two_regions", "register_from_manifest"]

SOURCE_BUCKET = "kernels-src"
TARGET_BUCKET = "kernels-dst"
KERNEL_KEY = "boot/vmlinuz-2.6.manifest.xml"
RAMDISK_KEY = "boot/initrd-2.6.manifest.xml"


def _manifest(image_type: str) -> bytes:
    return (
        "<?xml version='1.0'?><manifest><version>2007-10-10</version>"
        "<machine_configuration><architecture>x86_64</architecture></machine_configuration>"
        f"<image><name>x</name><type>{image_type}</type></image></manifest>"
    ).encode()


_SESSION = boto3.session.Session()  # one session: EC2's large model is loaded once
_CLIENTS: dict[tuple[str, str], Any] = {}


def ec2_client(aws: AwsStandIn, region: str, endpoint_url: str | None = None) -> Any:
    """An EC2 client of the stand-in's account in ``region`` (made once, then shared)."""
    key = (region, endpoint_url or aws.endpoint_url)
    if key not in _CLIENTS:
        _CLIENTS[key] = _SESSION.client(
            "ec2",
            region_name=region,
            endpoint_url=key[1],
            aws_access_key_id=aws.access_key,
            aws_secret_access_key=aws.secret_key,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )
    return _CLIENTS[key]


def register_from_manifest(
    aws: AwsStandIn, region: str, location: str, image_type: str, name: str
) -> str:
    """Puts a manifest of ``image_type`` at ``location`` (bucket/key) and registers it in
    ``region``; returns the image id (aki-/ari-/ami-)."""
    s3 = aws.client("s3")
    bucket, _, key = location.partition("/")
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=_manifest(image_type), ACL="aws-exec-read")
    reply = ec2_client(aws, region).register_image(Name=name, ImageLocation=location)
    return str(reply["ImageId"])


@dataclass(frozen=True)
class KernelPair:
    source_region: str
    target_region: str
    source_kernel: str
    source_ramdisk: str
    target_kernel: str
    target_ramdisk: str


def kernels_in_two_regions(
    aws: AwsStandIn, *, source: str = "us-east-1", target: str = "eu-west-1"
) -> KernelPair:
    """A kernel and a ramdisk in ``source`` and their counterparts in ``target``."""
    kernel = register_from_manifest(
        aws, source, f"{SOURCE_BUCKET}/{KERNEL_KEY}", "kernel", "kernel-source"
    )
    ramdisk = register_from_manifest(
        aws, source, f"{SOURCE_BUCKET}/{RAMDISK_KEY}", "ramdisk", "ramdisk-source"
    )
    # Decoys first, so that a matcher taking the first image it sees would pick them.
    register_from_manifest(aws, target, f"decoy-same-key/{KERNEL_KEY}", "machine", "decoy-type")
    register_from_manifest(
        aws, target, f"{TARGET_BUCKET}/boot/other.manifest.xml", "kernel", "decoy-key"
    )
    target_kernel = register_from_manifest(
        aws, target, f"{TARGET_BUCKET}/{KERNEL_KEY}", "kernel", "kernel-target"
    )
    target_ramdisk = register_from_manifest(
        aws, target, f"{TARGET_BUCKET}/{RAMDISK_KEY}", "ramdisk", "ramdisk-target"
    )
    return KernelPair(source, target, kernel, ramdisk, target_kernel, target_ramdisk)
