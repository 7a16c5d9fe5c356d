"""The combined stand-in and its fixtures: one endpoint for S3, STS, EC2 and EBS as one
account, the account STS reports, the recording proxy in front of all of it, resets between
tests, and the environment a subprocess uses."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import DEFAULT_ACCOUNT, AwsStandIn
from tests.support.ec2_images import ImageFate
from tests.support.s3proxy import Faults, Proxy


def test_sts_reports_the_configured_account(aws: AwsStandIn, aws_proxy: Proxy) -> None:
    sts = aws.client("sts", endpoint_url=aws_proxy.endpoint_url)
    identity = sts.get_caller_identity()
    assert identity["Account"] == aws.account_id == DEFAULT_ACCOUNT
    assert identity["Arn"].startswith(f"arn:aws:sts::{aws.account_id}:")
    with aws.as_account("444455556666"):
        assert sts.get_caller_identity()["Account"] == "444455556666"
    assert sts.get_caller_identity()["Account"] == DEFAULT_ACCOUNT
    assert [r.method for r in aws_proxy.requests] == ["POST"] * 3


def test_one_proxy_records_every_service_in_order(aws: AwsStandIn, aws_proxy: Proxy) -> None:
    def client(service: str) -> object:
        return aws.client(service, endpoint_url=aws_proxy.endpoint_url)

    client("sts").get_caller_identity()  # type: ignore[attr-defined]
    client("s3").create_bucket(Bucket="one-endpoint")  # type: ignore[attr-defined]
    snapshot_id = client("ebs").start_snapshot(VolumeSize=1)["SnapshotId"]  # type: ignore[attr-defined]
    client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])  # type: ignore[attr-defined]

    scopes = [r.headers["authorization"].split("/")[3] for r in aws_proxy.requests]
    assert scopes == ["sts", "s3", "ebs", "ec2"]
    assert [(r.method, r.path) for r in aws_proxy.requests][1:3] == [
        ("PUT", "/one-endpoint"),
        ("POST", "/snapshots"),
    ]


def test_reset_leaves_nothing_behind(aws_session: AwsStandIn, aws: AwsStandIn) -> None:
    aws.client("s3").create_bucket(Bucket="left-over")
    aws.client("ebs").start_snapshot(VolumeSize=1)
    aws.ec2.image_fate = ImageFate(pending_describes=5)
    aws.ebs.advance(minutes=30)

    aws_session.reset()

    assert aws.ec2.calls == [] and aws.ebs.calls == []
    assert aws.ec2.image_fate == ImageFate()
    assert aws.ebs.now() - time.monotonic() < 60  # the clock is back to real time
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.client("ec2").describe_snapshots()["Snapshots"] == []


def test_retries_get_through_injected_faults(
    aws: AwsStandIn, aws_proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.retries.standard import ExponentialBackoff

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    aws_proxy.set_faults(Faults(error_rate=1.0, max_faults=2, seed=3))
    ebs = aws.client("ebs", endpoint_url=aws_proxy.endpoint_url, max_attempts=5)
    snapshot_id = ebs.start_snapshot(VolumeSize=1, ClientToken="retried-start")["SnapshotId"]
    assert aws_proxy.faults_injected == 2
    # The idempotency token made the retried StartSnapshot harmless: one snapshot.
    assert [s["SnapshotId"] for s in aws.client("ec2").describe_snapshots()["Snapshots"]] == [
        snapshot_id
    ]


def test_a_subprocess_finds_the_stand_in_from_its_environment(
    aws: AwsStandIn, aws_proxy: Proxy
) -> None:
    script = (
        "import boto3, json\n"
        "print(json.dumps({'account': boto3.client('sts').get_caller_identity()['Account'],"
        " 'images': boto3.client('ec2').describe_images(Owners=['self'])['Images']}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=aws.environment(aws_proxy.endpoint_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == {"account": aws.account_id, "images": []}
    assert len(aws_proxy.requests) == 2
    assert aws.ec2.calls_to("DescribeImages")[-1].params == {"Owner.1": "self"}


def test_dry_run_is_answered_as_aws_does(aws: AwsStandIn) -> None:
    with pytest.raises(ClientError) as error:
        aws.client("ec2").describe_images(Owners=["self"], DryRun=True)
    assert error.value.response["Error"]["Code"] == "DryRunOperation"
