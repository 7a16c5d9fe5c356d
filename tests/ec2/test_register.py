"""``amibundle register`` / ``deregister`` against the strict EC2 stand-in (moto alone keeps
only Name and Description and accepts a manifest that does not exist). The request is
checked as EC2 received it (its Query parameters), and the image as the stand-in keeps it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amibundle.cli import main
from amibundle.ec2 import ImageRegistration
from amibundle.errors import UsageError
from amibundle.uploading import BundleUploadResult
from tests.support.aws import AwsStandIn
from tests.support.aws_bundles import upload_small_bundle
from tests.support.common import Identity
from tests.support.ec2_images import ImageFate, ImageState, StateReason
from tests.support.s3proxy import Proxy


def register(*argv: str) -> int:
    return main(["register", *argv])


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("amibundle register: error: "), err
    return lines[0]


@pytest.fixture
def bundle(aws_env: Proxy, user_id: Identity, tmp_path: Path) -> BundleUploadResult:
    """A small bundle uploaded to s3://bundles/img/ (no kernel, no mappings)."""
    return upload_small_bundle(tmp_path, user_id)


def registered_id(capsys: pytest.CaptureFixture[str], bundle: BundleUploadResult, name: str) -> str:
    """The id register --json prints for ``bundle`` registered as ``name``."""
    assert register("-m", bundle.manifest_location, "-n", name, "--json") == 0
    return str(json.loads(capsys.readouterr().out)["image_id"])


def test_every_parameter_reaches_ec2_in_the_api_shape(
    aws: AwsStandIn,
    aws_env: Proxy,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = upload_small_bundle(
        tmp_path,
        user_id,
        kernel_id="aki-88aa75e1",
        ramdisk_id="ari-0123456789abcdef0",
        block_device_mapping=["ami=sda1,root=/dev/sda1,ephemeral0=sdb,swap=sda3"],
    )
    status = register(
        "-m", bundle.manifest_location, "-n", "amibundle test (1) [x] @ 'v'/1.0_a-b",
        "--description", "made by the test", "-b", "/dev/sdc=:8:true:gp3",
        "-b", "sdd=none", "-b", "/dev/sde=ephemeral1", "--tag", "team=infra", "--tag", "empty=",
        "--json",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0, out
    answer = json.loads(out)
    sent = aws.ec2.calls_to("RegisterImage")[-1].params
    assert sent == {
        "Name": "amibundle test (1) [x] @ 'v'/1.0_a-b",
        "Description": "made by the test",
        "ImageLocation": "bundles/img/img.manifest.xml",
        "Architecture": "x86_64",
        "VirtualizationType": "paravirtual",  # the manifest names a kernel
        "KernelId": "aki-88aa75e1",
        "RamdiskId": "ari-0123456789abcdef0",
        "RootDeviceName": "/dev/sda1",  # the manifest's root mapping
        # The manifest's ephemeral mapping in the API's form (ami, root and swap have none),
        # then -b's.
        "BlockDeviceMapping.1.DeviceName": "/dev/sdb",
        "BlockDeviceMapping.1.VirtualName": "ephemeral0",
        "BlockDeviceMapping.2.DeviceName": "/dev/sdc",
        "BlockDeviceMapping.2.Ebs.VolumeSize": "8",
        "BlockDeviceMapping.2.Ebs.DeleteOnTermination": "true",
        "BlockDeviceMapping.2.Ebs.VolumeType": "gp3",
        "BlockDeviceMapping.3.DeviceName": "/dev/sdd",
        "BlockDeviceMapping.3.NoDevice": "",
        "BlockDeviceMapping.4.DeviceName": "/dev/sde",
        "BlockDeviceMapping.4.VirtualName": "ephemeral1",
        "TagSpecification.1.ResourceType": "image",
        "TagSpecification.1.Tag.1.Key": "team",
        "TagSpecification.1.Tag.1.Value": "infra",
        "TagSpecification.1.Tag.2.Key": "empty",
        "TagSpecification.1.Tag.2.Value": "",
    }
    image = aws.ec2.image(answer["image_id"])
    assert image.to_api()["RootDeviceType"] == "instance-store"
    assert image.to_api()["ImageLocation"] == "bundles/img/img.manifest.xml"
    assert answer["state"] == "pending"


def test_hvm_options_and_overrides(aws: AwsStandIn, bundle: BundleUploadResult) -> None:
    location = bundle.manifest_location
    assert register("-m", location, "-n", "uefi", "--boot-mode", "uefi", "--ena", "--sriov") == 0
    sent = aws.ec2.calls_to("RegisterImage")[-1].params
    assert (sent["VirtualizationType"], sent["BootMode"]) == ("hvm", "uefi")
    assert (sent["EnaSupport"], sent["SriovNetSupport"]) == ("true", "simple")
    assert "KernelId" not in sent and "BlockDeviceMapping.1.DeviceName" not in sent

    argv = ["-m", location, "-n", "pv image", "--kernel", "aki-88aa75e1", "--architecture", "i386"]
    assert register(*argv, "--root-device-name", "xvda") == 0
    sent = aws.ec2.calls_to("RegisterImage")[-1].params
    assert (sent["VirtualizationType"], sent["KernelId"], sent["Architecture"]) == (
        "paravirtual",
        "aki-88aa75e1",
        "i386",
    )
    assert sent["RootDeviceName"] == "/dev/xvda"
    assert register("-m", location, "-n", "forced", "--virtualization-type", "paravirtual") == 0
    assert aws.ec2.calls_to("RegisterImage")[-1].params["VirtualizationType"] == "paravirtual"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-n", "ab"], "--name 'ab' is not a valid AMI name"),
        (["-n", "semi;colon"], "is not a valid AMI name"),
        (["-n", "okay", "--kernel", "aki-88aa75e1", "--virtualization-type", "hvm"], "--kernel"),
        (["-n", "okay", "--ena", "--kernel", "aki-88aa75e1"], "--ena applies to hvm images only"),
        (["-n", "okay", "-b", "/dev/sdc=ephemeral"], "--block-device-mapping '/dev/sdc=ephemeral'"),
        (["-n", "okay", "--tag", "aws:x=1"], "'aws:' keys"),
    ],
    ids=["short-name", "bad-character", "kernel-hvm", "ena-pv", "mapping", "tag"],
)
def test_bad_registrations_are_one_line_and_reach_no_ec2(
    argv: list[str],
    expected: str,
    aws: AwsStandIn,
    bundle: BundleUploadResult,
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    assert register("-m", bundle.manifest_location, *argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expected in line
    assert aws.ec2.calls_to("RegisterImage") == []


def test_missing_manifest_is_one_line_and_nothing_is_registered(
    aws: AwsStandIn, aws_env: Proxy, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.client("s3").create_bucket(Bucket="bundles")
    assert register("-m", "bundles/none/img.manifest.xml", "-n", "absent") == 1
    line = one_error_line(capsys.readouterr().err)
    assert "there is no bundle manifest at s3://bundles/none/img.manifest.xml" in line
    assert aws.ec2.calls_to("RegisterImage") == []


def test_duplicate_name_is_one_line(
    aws: AwsStandIn, bundle: BundleUploadResult, capsys: pytest.CaptureFixture[str]
) -> None:
    location = bundle.manifest_location
    assert register("-m", location, "-n", "twice") == 0
    capsys.readouterr()
    assert register("-m", location, "-n", "twice") == 1
    line = one_error_line(capsys.readouterr().err)
    assert "InvalidAMIName.Duplicate" in line and "twice" in line
    assert len(aws.ec2.images()) == 1


def test_wait_ends_at_available_or_fails_clearly(
    aws: AwsStandIn,
    bundle: BundleUploadResult,
    fast_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    location = bundle.manifest_location
    aws.ec2.image_fate = ImageFate(pending_describes=3)
    assert register("-m", location, "-n", "soon", "--wait", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "available"
    assert len(aws.ec2.calls_to("DescribeImages")) == 4

    reason = StateReason("Client.InvalidManifest", "the manifest could not be read")
    aws.ec2.image_fate = ImageFate(1, ImageState.FAILED, reason)
    assert register("-m", location, "-n", "never", "--wait") == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    image_id = captured.out.strip() or line.split("image ")[1].split()[0]
    assert f"image {image_id} is failed: the manifest could not be read" in line


def test_deregister_with_its_bundle(
    aws: AwsStandIn, bundle: BundleUploadResult, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = aws.client("s3")
    s3.put_object(Bucket="bundles", Key="img/img.part.9", Body=b"not the bundle's")
    image_id = registered_id(capsys, bundle, "gone soon")

    assert main(["deregister", image_id, "--delete-bundle", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["deleted_keys"] == ["img/img.manifest.xml", *bundle.part_keys]
    assert aws.ec2.images() == []
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="bundles").get("Contents", [])]
    assert left == ["img/img.part.9"]
    assert main(["deregister", image_id]) == 1
    assert f"there is no image {image_id}" in capsys.readouterr().err


def test_deregister_refuses_to_delete_a_bundle_it_cannot_read(
    aws: AwsStandIn, bundle: BundleUploadResult, capsys: pytest.CaptureFixture[str]
) -> None:
    image_id = registered_id(capsys, bundle, "kept")
    aws.client("s3").delete_object(Bucket="bundles", Key="img/img.manifest.xml")
    assert main(["deregister", image_id, "--delete-bundle"]) == 1
    assert "there is no bundle manifest" in capsys.readouterr().err
    assert [i.id for i in aws.ec2.images()] == [image_id]  # nothing changed


def test_registration_record_reports_every_problem_at_once() -> None:
    with pytest.raises(UsageError) as error:
        ImageRegistration.create(
            name="x", kernel_id="vmlinuz", boot_mode="bios", tags={"aws:a": "b"}
        )
    assert [p.param for p in error.value.problems] == ["name", "kernel_id", "boot_mode", "tags"]
