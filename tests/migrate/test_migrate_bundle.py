"""ec2-migrate-bundle with the classic kernel mapping, against the strict stand-ins (moto S3
and EC2 as one account): the manifest put at the destination names the target region's
kernel and ramdisk, and EC2's copy of the key is wrapped for the target's certificate."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from amibundle import s3
from amibundle.cli import classic_main
from amibundle.crypto import load_private_key, unwrap_secret
from amibundle.format.manifest_reader import parse
from amibundle.reading import check_signature
from tests.support.aws import AwsStandIn
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image
from tests.support.kernels import kernels_in_two_regions
from tests.support.s3proxy import Proxy


def test_migrate_bundle_maps_the_kernel_and_rewraps_the_key(
    tmp_path: Path,
    user_id: Identity,
    other_id: Identity,
    aws: AwsStandIn,
    aws_proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_proxy.endpoint_url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    kernels = kernels_in_two_regions(aws)
    image = sample_image(tmp_path / "root.img", 1)
    made = bundle_for(
        image,
        user_id,
        destination=tmp_path,
        kernel_id=kernels.source_kernel,
        ramdisk_id=kernels.source_ramdisk,
        part_size=256 * 1024,
    )
    settings = s3.S3Settings(
        access_key=aws.access_key, secret_key=aws.secret_key, endpoint_url=aws.endpoint_url
    )
    s3.upload_bundle(made.manifest_path, "bundles-us/x", settings=settings)
    argv = [
        "-m",
        made.manifest_path.name,
        "-b",
        "bundles-us/x",
        "-d",
        "bundles-eu/x",
        "-c",
        str(user_id.cert),
        "-k",
        str(user_id.key),
        "-a",
        aws.access_key,
        "-s",
        aws.secret_key,
        "--location",
        "EU",
        "--ec2cert",
        str(other_id.cert),
    ]
    assert classic_main("ec2-migrate-bundle", argv) == 0
    out = capsys.readouterr().out
    body = aws.client("s3").get_object(Bucket="bundles-eu", Key=f"x/{made.manifest_path.name}")
    migrated = parse(body["Body"].read())
    check_signature(migrated, user_id.cert)
    m = migrated.manifest
    assert (m.kernel_id, m.ramdisk_id) == (kernels.target_kernel, kernels.target_ramdisk)
    user = load_private_key(user_id.key)
    assert unwrap_secret(load_private_key(other_id.key), m.ec2_encrypted_key, "k") == (
        unwrap_secret(user, m.user_encrypted_key, "k")
    )
    assert "in eu-west-1" in out and "re-wrapped for" in out
    # The target region was guessed from --location EU, as the classic did.
    assert aws.client("s3").get_bucket_location(Bucket="bundles-eu")["LocationConstraint"] in (
        "EU",
        "eu-west-1",
    )
