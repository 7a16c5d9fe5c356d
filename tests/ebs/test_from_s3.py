"""to-ebs -b: a bundle in the stand-in's S3 streamed into a snapshot of the stand-in's EBS
(one moto), and --register: an EBS-backed AMI of it, with RegisterImage's parameters checked
as the EC2 stand-in received them. The snapshot's blocks are read from the EBS stand-in's
store (aws.ebs.blocks) and compared with blocks cut from the image by plain reads."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

import amibundle
from amibundle.cli import main
from amibundle.ebs import ebs_image_spec, register_snapshot, s3_bundle_to_snapshot
from amibundle.errors import UsageError
from amibundle.s3.settings import S3Settings
from amibundle.uploading import BundleUploadResult, bundle_upload
from amibundle.volume.boot import BootMode
from tests.support.aws import AwsStandIn
from tests.support.bundling import keys_for, metadata_for
from tests.support.common import Identity, write_image
from tests.support.ebs_readback import BLOCK, image_blocks
from tests.support.s3proxy import Proxy

MIB = 1 << 20
KERNEL = "aki-12345678"
EPHEMERAL = ["ami=sda1,root=/dev/sda1,ephemeral0=sdb,swap=sda3"]


@pytest.fixture
def env(aws: AwsStandIn, aws_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    """boto3 in this process reaches S3, EBS and EC2 of the stand-in through the proxy."""
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    return aws_proxy


def image_with_holes(path: Path) -> Path:
    """4 MiB and a bit: data in three blocks, holes between, not a multiple of a block."""
    rnd = random.Random(14)
    return write_image(path, 4 * MIB + 1234, [
        (100, rnd.randbytes(80_000)),
        (2 * BLOCK - 7, rnd.randbytes(300)),
        (4 * MIB + 1000, rnd.randbytes(234)),
    ])  # fmt: skip


def upload(image: Path, identity: Identity, bucket: str, **metadata: Any) -> BundleUploadResult:
    """Bundled straight into the stand-in's bucket, in 16 KiB parts (several of them)."""
    return bundle_upload(
        image, bucket, metadata=metadata_for(user="111122223333", **metadata),
        keys=keys_for(identity), settings=S3Settings(), part_size=16 * 1024,
    )  # fmt: skip


def root_volume(device: str, snapshot_id: str) -> dict[str, str]:
    """RegisterImage's Query parameters for the snapshot as a 1 GiB gp3 root volume."""
    return {
        "RootDeviceName": device,
        "BlockDeviceMapping.1.DeviceName": device,
        "BlockDeviceMapping.1.Ebs.SnapshotId": snapshot_id,
        "BlockDeviceMapping.1.Ebs.VolumeSize": "1",
        "BlockDeviceMapping.1.Ebs.VolumeType": "gp3",
        "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
    }


def snapshots(aws: AwsStandIn) -> dict[str, str]:
    found = aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]
    return {s["SnapshotId"]: s["State"] for s in found}


def test_a_bundle_in_a_bucket_becomes_a_snapshot_equal_to_its_image(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    image = image_with_holes(tmp_path / "root.img")
    uploaded = upload(image, user_id, "bundles/prefix")
    env.requests.clear()
    result = s3_bundle_to_snapshot(
        "bundles/prefix", settings=S3Settings(), manifest_name="root.img.manifest.xml",
        private_key=user_id.key, cert=user_id.cert, prefetch=2,
    )  # fmt: skip
    assert aws.ebs.blocks(result.snapshot_id) == image_blocks(image)
    assert result.digest == uploaded.digest and result.image_size == image.stat().st_size
    # Every part was fetched from the bucket once, and nothing else was asked of S3.
    gets = sorted(r.path for r in env.requests if r.method == "GET" and "/bundles/" in r.path)
    expected = sorted(f"/bundles/{key}" for key in (uploaded.manifest_key, *uploaded.part_keys))
    assert gets == expected and len(uploaded.part_keys) > 3
    assert list(snapshots(aws)) == [result.snapshot_id]
    assert len(aws.ebs.calls_to("CompleteSnapshot")) == 1
    assert amibundle.s3_bundle_to_snapshot is s3_bundle_to_snapshot


def test_a_tampered_part_in_the_bucket_fails_and_leaves_no_snapshot(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    image = write_image(tmp_path / "dense.img", MIB, [(0, random.Random(1).randbytes(MIB))])
    uploaded = upload(image, user_id, "bundles")
    part = uploaded.part_keys[5]
    s3 = aws.client("s3")
    data = bytearray(s3.get_object(Bucket="bundles", Key=part)["Body"].read())
    data[10] ^= 1
    s3.put_object(Bucket="bundles", Key=part, Body=bytes(data))
    argv = ["to-ebs", "-b", "bundles", "-p", "dense.img", "-k", str(user_id.key), "-q"]
    status = main([*argv, "--register", "never-registered"])
    err = capsys.readouterr().err
    assert status == 1, err
    (line,) = [x for x in err.splitlines() if x.startswith("amibundle to-ebs: error: ")]
    assert line.endswith(f"{part} is damaged: its SHA-1 does not match the manifest")
    assert "was not completed and is deleted" in err
    assert "Traceback" not in err
    assert aws.ebs.calls_to("StartSnapshot") and not aws.ebs.calls_to("CompleteSnapshot")
    assert snapshots(aws) == {}  # deleted
    assert not aws.ec2.calls_to("RegisterImage")


@pytest.mark.usefixtures("fast_retries")  # --wait polls at once
def test_register_sends_the_paravirtual_registration_of_the_manifest(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    image = image_with_holes(tmp_path / "root.img")
    upload(image, user_id, "bundles/x", kernel_id=KERNEL, block_device_mapping=EPHEMERAL)
    status = main([
        "to-ebs", "-b", "bundles/x", "-m", "root.img.manifest.xml", "-k", str(user_id.key),
        "--cert", str(user_id.cert), "--register", "web (1)", "--description", "from a bundle",
        "--tag", "team=web", "--json",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert status == 0, out.err
    report = json.loads(out.out)
    snapshot_id, image_id = report["snapshot_id"], report["image"]["image_id"]
    assert report["state"] == "completed"  # --register waits for it
    assert aws.ebs.blocks(snapshot_id) == image_blocks(image)
    (call,) = aws.ec2.calls_to("RegisterImage")
    assert dict(call.params) == {
        "Name": "web (1)",
        "Description": "from a bundle",
        "VirtualizationType": "paravirtual",
        "Architecture": "x86_64",
        "KernelId": KERNEL,
        **root_volume("/dev/sda1", snapshot_id),
        "BlockDeviceMapping.2.DeviceName": "/dev/sdb",
        "BlockDeviceMapping.2.VirtualName": "ephemeral0",
        "TagSpecification.1.ResourceType": "image",
        "TagSpecification.1.Tag.1.Key": "team",
        "TagSpecification.1.Tag.1.Value": "web",
    }
    assert aws.ec2.image(image_id).name == "web (1)"
    assert report["image"]["snapshot_id"] == snapshot_id


@pytest.mark.usefixtures("fast_retries")  # --wait polls at once
def test_a_bootable_registration_is_hvm_with_its_boot_mode_and_ena(
    env: Proxy, aws: AwsStandIn, tmp_path: Path
) -> None:
    """The registration --make-bootable reports (tests/ebs/test_bootable.py checks that it
    does) as sent: hvm, /dev/xvda, the boot mode, ENA; a pending snapshot is refused first."""
    image = image_with_holes(tmp_path / "raw.img")
    pending = amibundle.image_to_snapshot(image, architecture="x86_64")
    with pytest.raises(UsageError, match=r"snapshot= snap-\w+ is pending: EC2 registers only"):
        register_snapshot(pending, "never")
    done = amibundle.image_to_snapshot(image, architecture="x86_64", wait=True)
    spec = ebs_image_spec(done.snapshot_id, 1, architecture="x86_64", bootable=BootMode.UEFI)
    registered = register_snapshot(dataclasses.replace(done, registration=spec), "hvm-1")
    (call,) = aws.ec2.calls_to("RegisterImage")
    assert dict(call.params) == {
        "Name": "hvm-1",
        "VirtualizationType": "hvm",
        "Architecture": "x86_64",
        "BootMode": "uefi",
        "EnaSupport": "true",
        **root_volume("/dev/xvda", done.snapshot_id),
    }
    assert registered.request["BootMode"] == "uefi" and registered.image_id.startswith("ami-")


@pytest.mark.usefixtures("fast_retries")  # --wait polls at once
def test_a_refused_registration_keeps_the_snapshot_and_says_what_to_do(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = image_with_holes(tmp_path / "raw.img")
    argv = ["to-ebs", "-i", str(image), "--register", "twice", "-q"]
    assert main(argv) == 0
    capsys.readouterr()
    status = main(argv)  # the same name again: InvalidAMIName.Duplicate
    err = capsys.readouterr().err.splitlines()
    assert status == 1, err
    states = snapshots(aws)
    (second,) = [s for s in states if all(s not in i.snapshot_ids for i in aws.ec2.images())]
    assert states[second] == "completed"
    assert "InvalidAMIName.Duplicate" in err[0]
    assert f"snapshot {second} is complete and stays" in err[0]
    assert err[1].startswith("hint: register it by hand: aws ec2 register-image")
    assert f"aws ec2 delete-snapshot --region {aws.region} --snapshot-id {second}" in err[1]
