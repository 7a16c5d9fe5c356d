"""The strict EC2 stand-in's RegisterImage, driven with plain boto3: what it keeps and what it
refuses, with AWS's error codes. Each refusal here is one moto alone accepts (see
test_moto_alone_accepts_a_missing_manifest)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.aws import AwsStandIn
from tests.support.ec2_manifests import EndpointManifests
from tests.support.s3proxy import Proxy

from .ec2_helpers import BUCKET, code_of, completed_snapshot, describe, put_manifest

# -- RegisterImage: what is kept --------------------------------------------------------


def test_instance_store_registration_keeps_what_aws_keeps(
    aws: AwsStandIn, aws_proxy: Proxy
) -> None:
    location = put_manifest(aws)
    ec2 = aws.client("ec2", endpoint_url=aws_proxy.endpoint_url)
    image_id = ec2.register_image(
        Name="amibundle test (1) [x] @ 'v'/1.0_a-b",
        Description="made by the test",
        ImageLocation=location,
        Architecture="x86_64",
        VirtualizationType="paravirtual",
        KernelId="aki-88aa75e1",
        RamdiskId="ari-0123456789abcdef0",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}],
        BootMode="legacy-bios",
        SriovNetSupport="simple",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "Name", "Value": "t"}]}],
    )["ImageId"]
    image = describe(ec2, image_id)

    assert image["RootDeviceType"] == "instance-store"
    assert image["ImageLocation"] == location
    assert image["OwnerId"] == aws.account_id
    assert {
        k: image[k] for k in ("Architecture", "VirtualizationType", "KernelId", "RamdiskId")
    } == {
        "Architecture": "x86_64",
        "VirtualizationType": "paravirtual",
        "KernelId": "aki-88aa75e1",
        "RamdiskId": "ari-0123456789abcdef0",
    }
    assert image["BlockDeviceMappings"] == [{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}]
    assert (image["BootMode"], image["SriovNetSupport"]) == ("legacy-bios", "simple")
    assert image["Description"] == "made by the test"
    assert image["Tags"] == [{"Key": "Name", "Value": "t"}]
    # The request as sent: EC2 Query parameters (the proxy saw the POST, the stand-in its form).
    sent = aws.ec2.calls_to("RegisterImage")[-1].params
    assert sent["ImageLocation"] == location
    assert sent["BlockDeviceMapping.1.VirtualName"] == "ephemeral0"
    assert sent["TagSpecification.1.Tag.1.Key"] == "Name"
    assert [r.method for r in aws_proxy.requests] == ["POST", "POST"]
    assert "/ec2/aws4_request" in aws_proxy.requests[0].headers["authorization"]


def test_instance_store_defaults_come_from_the_manifest_and_the_api(aws: AwsStandIn) -> None:
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(Name="defaults", ImageLocation=put_manifest(aws))["ImageId"]
    image = describe(ec2, image_id)
    assert image["Architecture"] == "x86_64"  # from <machine_configuration>
    assert image["VirtualizationType"] == "paravirtual"  # the API's default
    assert image["RootDeviceName"] == "/dev/sda1"  # the manifest's root mapping


def test_ebs_registration_keeps_the_snapshot_root(aws: AwsStandIn) -> None:
    snapshot_id = completed_snapshot(aws, gib=2)
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(
        Name="ebs-backed",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        Architecture="arm64",
        BootMode="uefi",
        EnaSupport=True,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 4}}
        ],
    )["ImageId"]
    image = describe(ec2, image_id)
    assert image["RootDeviceType"] == "ebs"
    assert image["ImageLocation"] == f"{aws.account_id}/ebs-backed"
    assert image["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "DeleteOnTermination": True,
                "SnapshotId": snapshot_id,
                "VolumeSize": 4,
                "VolumeType": "gp2",
                "Encrypted": False,
            },
        }
    ]
    assert (image["Architecture"], image["BootMode"], image["EnaSupport"]) == (
        "arm64",
        "uefi",
        True,
    )
    assert "ImageLocation" not in aws.ec2.calls_to("RegisterImage")[-1].params


def test_ebs_registration_defaults_to_i386_and_the_snapshot_size(aws: AwsStandIn) -> None:
    snapshot_id = completed_snapshot(aws, gib=3)
    ec2 = aws.client("ec2")
    image_id = ec2.register_image(
        Name="ebs-defaults",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]
    image = describe(ec2, image_id)
    assert image["Architecture"] == "i386"
    assert image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 3


# -- RegisterImage: what is refused -----------------------------------------------------

SNAP = "{snapshot}"  # replaced by a real completed snapshot's id
STORE_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("name too short", {"Name": "ab"}, "InvalidAMIName.Malformed"),
    ("name too long", {"Name": "n" * 129}, "InvalidAMIName.Malformed"),
    ("name with #", {"Name": "bad#name"}, "InvalidAMIName.Malformed"),
    ("name with a tab", {"Name": "tab\tname"}, "InvalidAMIName.Malformed"),
    ("no such manifest", {"ImageLocation": f"{BUCKET}/missing.manifest.xml"}, "InvalidManifest"),
    ("no such bucket", {"ImageLocation": "no-such-bucket/img.manifest.xml"}, "InvalidManifest"),
    ("no key", {"ImageLocation": BUCKET}, "InvalidManifest"),
    ("kernel not aki-", {"KernelId": "ari-88aa75e1"}, "InvalidKernelId.Malformed"),
    ("kernel short", {"KernelId": "aki-1234"}, "InvalidKernelId.Malformed"),
    ("ramdisk not ari-", {"RamdiskId": "aki-88aa75e1"}, "InvalidRamDiskId.Malformed"),
    ("virtualization", {"VirtualizationType": "pv"}, "InvalidParameterValue"),
    ("boot mode", {"BootMode": "bios"}, "InvalidParameterValue"),
    ("architecture", {"Architecture": "amd64"}, "InvalidParameterValue"),
    ("sriov", {"SriovNetSupport": "yes"}, "InvalidParameterValue"),
    ("description", {"Description": "d" * 256}, "InvalidParameterValue"),
    (
        "location with a snapshot root",
        {
            "RootDeviceName": "/dev/sda1",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": SNAP}}],
        },
        "InvalidParameterCombination",
    ),
    (
        "location with a snapshot on the manifest's root",
        {"BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": SNAP}}]},
        "InvalidParameterCombination",
    ),
    (
        "virtual name not ephemeralN",
        {"BlockDeviceMappings": [{"DeviceName": "/dev/sdb", "VirtualName": "swap"}]},
        "InvalidBlockDeviceMapping",
    ),
    (
        "tags for a snapshot",
        {"TagSpecifications": [{"ResourceType": "snapshot", "Tags": [{"Key": "a", "Value": "b"}]}]},
        "InvalidParameterValue",
    ),
    (
        "aws: tag",
        {
            "TagSpecifications": [
                {"ResourceType": "image", "Tags": [{"Key": "aws:x", "Value": "b"}]}
            ]
        },
        "InvalidParameterValue",
    ),
]
EBS_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("no root device name", {"RootDeviceName": None}, "MissingParameter"),
    ("root not mapped", {"RootDeviceName": "/dev/sda1"}, "InvalidBlockDeviceMapping"),
    (
        "unknown snapshot",
        {
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}
            ]
        },
        "InvalidSnapshot.NotFound",
    ),
    (
        "malformed snapshot id",
        {"BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snapshot-1"}}]},
        "InvalidSnapshotID.Malformed",
    ),
    (
        "volume smaller than the snapshot",
        {
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": SNAP, "VolumeSize": 1}}
            ]
        },
        "InvalidBlockDeviceMapping",
    ),
    (
        "device mapped twice",
        {
            "BlockDeviceMappings": [
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": SNAP}},
                {"DeviceName": "/dev/xvda", "VirtualName": "ephemeral0"},
            ]
        },
        "InvalidBlockDeviceMapping",
    ),
]


def _with_snapshot(value: Any, snapshot_id: str) -> Any:
    if isinstance(value, dict):
        return {k: _with_snapshot(v, snapshot_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_snapshot(v, snapshot_id) for v in value]
    return snapshot_id if value == SNAP else value


def _request(base: dict[str, Any], overrides: dict[str, Any], snapshot_id: str) -> dict[str, Any]:
    request = {**base, **_with_snapshot(overrides, snapshot_id)}
    return {k: v for k, v in request.items() if v is not None}


@pytest.mark.parametrize(
    ("case", "overrides", "code"), STORE_REFUSALS, ids=[c[0] for c in STORE_REFUSALS]
)
def test_instance_store_refusals(
    aws: AwsStandIn, case: str, overrides: dict[str, Any], code: str
) -> None:
    snapshot_id = completed_snapshot(aws, gib=2) if SNAP in repr(overrides) else ""
    base = {"Name": "refused", "ImageLocation": put_manifest(aws), "Architecture": "x86_64"}
    ec2 = aws.client("ec2", parameter_validation=False)  # let the server see what botocore refuses
    with pytest.raises(ClientError) as error:
        ec2.register_image(**_request(base, overrides, snapshot_id))
    assert code_of(error) == code
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ec2.describe_images(Owners=["self"])["Images"] == []


@pytest.mark.parametrize(
    ("case", "overrides", "code"), EBS_REFUSALS, ids=[c[0] for c in EBS_REFUSALS]
)
def test_ebs_refusals(aws: AwsStandIn, case: str, overrides: dict[str, Any], code: str) -> None:
    snapshot_id = completed_snapshot(aws, gib=2)
    base = {
        "Name": "refused",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
    }
    ec2 = aws.client("ec2", parameter_validation=False)
    with pytest.raises(ClientError) as error:
        ec2.register_image(**_request(base, overrides, snapshot_id))
    assert code_of(error) == code
    assert ec2.describe_images(Owners=["self"])["Images"] == []


def test_a_snapshot_still_pending_is_refused(aws: AwsStandIn) -> None:
    ebs, ec2 = aws.client("ebs"), aws.client("ec2")
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    mapping = [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}]
    with pytest.raises(ClientError) as error:
        ec2.register_image(Name="early", RootDeviceName="/dev/xvda", BlockDeviceMappings=mapping)
    assert code_of(error) == "IncorrectState"


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<notmanifest/>",
        b'<!DOCTYPE m [<!ENTITY e "x">]><manifest>&e;</manifest>',
    ],
    ids=["garbage", "other root", "entity"],
)
def test_an_unparsable_manifest_is_refused(aws: AwsStandIn, body: bytes) -> None:
    location = put_manifest(aws, "bad.manifest.xml", body)
    with pytest.raises(ClientError) as error:
        aws.client("ec2").register_image(Name="unparsable", ImageLocation=location)
    assert code_of(error) == "InvalidManifest"


def test_duplicate_names_are_refused_per_owner(aws: AwsStandIn) -> None:
    location = put_manifest(aws)
    ec2 = aws.client("ec2")
    first = ec2.register_image(Name="twice", ImageLocation=location)["ImageId"]
    with pytest.raises(ClientError) as error:
        ec2.register_image(Name="twice", ImageLocation=location)
    assert code_of(error) == "InvalidAMIName.Duplicate"

    with aws.as_account("444455556666"):  # another owner may use the name
        other = ec2.register_image(Name="twice", ImageLocation=location)["ImageId"]
        assert describe(ec2, other)["OwnerId"] == "444455556666"

    ec2.deregister_image(ImageId=first)  # and so may the owner, once the first is gone
    ec2.register_image(Name="twice", ImageLocation=location)


def test_manifests_can_be_read_from_another_s3_endpoint(aws: AwsStandIn, aws_proxy: Proxy) -> None:
    location = put_manifest(aws, "elsewhere.manifest.xml")
    aws.ec2.manifests = EndpointManifests(aws.client("s3", endpoint_url=aws_proxy.endpoint_url))
    ec2 = aws.client("ec2")
    ec2.register_image(Name="read-elsewhere", ImageLocation=location)
    assert [(r.method, r.path) for r in aws_proxy.requests] == [
        ("GET", f"/{BUCKET}/elsewhere.manifest.xml")
    ]
    with pytest.raises(ClientError) as error:
        ec2.register_image(Name="missing-elsewhere", ImageLocation=f"{BUCKET}/nothing.xml")
    assert code_of(error) == "InvalidManifest"


def test_moto_alone_accepts_a_missing_manifest(aws: AwsStandIn) -> None:
    """Why the stand-in exists: without it moto registers anything."""
    aws.ec2.uninstall()
    try:
        image_id = aws.client("ec2").register_image(
            Name="nothing-behind-it", ImageLocation="no-bucket/no.manifest.xml"
        )["ImageId"]
        assert image_id.startswith("ami-")
    finally:
        aws.ec2.install()
    with pytest.raises(ClientError) as error:
        aws.client("ec2").register_image(Name="strict-again", ImageLocation="no-bucket/x.xml")
    assert code_of(error) == "InvalidManifest"
