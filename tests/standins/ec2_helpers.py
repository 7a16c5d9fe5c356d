"""Helpers shared by the EC2 stand-in's tests: a manifest in moto's S3, a completed snapshot."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import AwsStandIn
from tests.support.ebs_snapshots import SnapshotFate

BUCKET = "bundles"
MANIFEST = (
    b'<?xml version="1.0"?>\n<manifest><version>2007-10-10</version>'
    b"<machine_configuration><architecture>x86_64</architecture>"
    b"<block_device_mapping><mapping><virtual>ami</virtual><device>sda1</device></mapping>"
    b"<mapping><virtual>root</virtual><device>/dev/sda1</device></mapping>"
    b"</block_device_mapping></machine_configuration></manifest>\n"
)


def put_manifest(aws: AwsStandIn, key: str = "img/img.manifest.xml", body: bytes = MANIFEST) -> str:
    s3 = aws.client("s3")
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, ACL="aws-exec-read")
    return f"{BUCKET}/{key}"


def completed_snapshot(aws: AwsStandIn, gib: int = 2) -> str:
    """A completed snapshot of `gib` GiB written through the EBS stand-in (no blocks)."""
    aws.ebs.snapshot_fate = SnapshotFate(pending_describes=0)
    ebs = aws.client("ebs")
    snapshot_id: str = ebs.start_snapshot(VolumeSize=gib)["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    aws.ebs.snapshot_fate = SnapshotFate()
    return snapshot_id


def code_of(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def describe(ec2: Any, image_id: str) -> dict[str, Any]:
    images = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert len(images) == 1
    return dict(images[0])
