"""The records to-ebs is driven by, checked when made (every problem named by its
parameter), and what RegisterImage needs for an AMI of the snapshot: the parameters for
both the paravirtual and the bootable-hvm path, then accepted by the strict EC2 stand-in
with a real snapshot written by to-ebs."""

from __future__ import annotations

from pathlib import Path

import pytest

from amibundle.ebs import BootableSpec, SnapshotSpec, ebs_image_spec, image_to_snapshot
from amibundle.ebs.registration import VirtualizationType
from amibundle.ebs.snapshot import parse_tag, volume_gib_for
from amibundle.errors import UsageError
from amibundle.format.manifest import DeviceMapping
from amibundle.volume.boot import BootMode
from amibundle.volume.plan import PartitionTable
from tests.support.aws import AwsStandIn
from tests.support.common import write_image
from tests.support.ebs_snapshots import SnapshotFate
from tests.support.s3proxy import Proxy

SNAP = "snap-0123456789abcdef0"
GIB = 1 << 30


# --- SnapshotSpec ------------------------------------------------------------------------


def test_tags_from_text_pairs_or_a_mapping() -> None:
    assert parse_tag("Name=a=b") == ("Name", "a=b")
    assert parse_tag("empty=") == ("empty", "")
    assert SnapshotSpec(tags={"a": "1"}).tags == (("a", "1"),)
    assert SnapshotSpec(tags=["a=1", ("b", "2")]).tags == (("a", "1"), ("b", "2"))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size_gib": 0}, r"size_gib= must be a whole number of GiB from 1 to 65536, not 0"),
        ({"size_gib": True}, r"size_gib= must be .* not True"),
        ({"timeout_minutes": 5}, r"timeout_minutes= must be 10 to 4320 minutes, not 5"),
        ({"description": ""}, r"description= must be 1 to 255 characters"),
        ({"tags": ["x"]}, r"tags= 'x' is not KEY=VALUE"),
        ({"tags": {"aws:x": "1"}}, r"tags=: tag keys starting with 'aws:' are AWS's"),
        ({"tags": [("a", "1"), ("a", "2")]}, r"tags=: a tag key is given twice"),
        ({"tags": {"k" * 128: "v"}}, r"tags=: tag 'k+' needs a key of 1 to 127 .*"),
        ({"kms_key_arn": "alias/mine"}, r"kms_key_arn= 'alias/mine' is not a KMS key ARN .*"),
        ({"client_token": "has space"}, r"client_token= must be 1 to 255 characters, no spaces"),
    ],
)
def test_snapshot_spec_refusals(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        SnapshotSpec(**fields)  # type: ignore[arg-type]


def test_every_spec_problem_at_once() -> None:
    with pytest.raises(UsageError) as caught:
        SnapshotSpec(size_gib=-1, timeout_minutes=1, client_token="")  # type: ignore[arg-type]
    assert [p.param for p in caught.value.problems] == [
        "size_gib",
        "timeout_minutes",
        "client_token",
    ]


def test_volume_size_rounds_up_and_a_given_one_must_hold_the_disk() -> None:
    assert volume_gib_for(1, SnapshotSpec()) == 1
    assert volume_gib_for(GIB, SnapshotSpec()) == 1
    assert volume_gib_for(GIB + 1, SnapshotSpec()) == 2
    assert volume_gib_for(GIB + 1, SnapshotSpec(size_gib=8)) == 8
    with pytest.raises(UsageError, match="more than an EBS volume's 65536 GiB"):
        volume_gib_for(65536 * GIB + 1, SnapshotSpec())


# --- BootableSpec -------------------------------------------------------------------------


def test_bootable_spec_takes_values_and_refuses_what_cannot_boot() -> None:
    spec = BootableSpec("mbr", "legacy-bios")  # type: ignore[arg-type]
    assert (spec.partition, spec.boot_mode) == (PartitionTable.MBR, BootMode.LEGACY_BIOS)
    with pytest.raises(UsageError, match="partition= must be mbr or gpt"):
        BootableSpec(PartitionTable.NONE)
    with pytest.raises(UsageError, match="boot_mode= uefi needs a GPT disk"):
        BootableSpec(PartitionTable.MBR, BootMode.UEFI)
    with pytest.raises(UsageError, match="boot_mode= must be one of legacy-bios, uefi"):
        BootableSpec(PartitionTable.GPT, "bios")  # type: ignore[arg-type]


# --- registration ---------------------------------------------------------------------------

MANIFEST_MAPPING = (
    DeviceMapping("ami", "sda1"),
    DeviceMapping("root", "/dev/sda1"),
    DeviceMapping("ephemeral0", "sdb"),
    DeviceMapping("ephemeral1", "/dev/sdc"),
    DeviceMapping("swap", "sda3"),
)


def test_a_partitionless_image_registers_paravirtual_with_the_manifests_kernel() -> None:
    spec = ebs_image_spec(
        SNAP, 8, architecture="x86_64", bootable=None, block_device_mapping=MANIFEST_MAPPING,
        kernel_id="aki-88aa75e1", ramdisk_id="ari-12345678",
    )  # fmt: skip
    assert spec.request("web-1", description="from a bundle") == {
        "Name": "web-1",
        "Description": "from a bundle",
        "VirtualizationType": "paravirtual",
        "Architecture": "x86_64",
        "KernelId": "aki-88aa75e1",
        "RamdiskId": "ari-12345678",
        "RootDeviceName": "/dev/sda1",
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {
                    "SnapshotId": SNAP,
                    "VolumeSize": 8,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            },
            {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            {"DeviceName": "/dev/sdc", "VirtualName": "ephemeral1"},
        ],
    }


@pytest.mark.parametrize("mode", list(BootMode))
def test_a_bootable_disk_registers_hvm_with_its_boot_mode_and_ena(mode: BootMode) -> None:
    spec = ebs_image_spec(
        SNAP, 2, architecture="x86_64", bootable=mode, kernel_id="aki-88aa75e1",
        ramdisk_id="ari-12345678",
    )  # fmt: skip
    request = spec.request("web-1")
    assert request == {
        "Name": "web-1",
        "VirtualizationType": "hvm",
        "Architecture": "x86_64",
        "RootDeviceName": "/dev/xvda",
        "BootMode": mode.value,
        "EnaSupport": True,
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "SnapshotId": SNAP,
                    "VolumeSize": 2,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
    }
    assert spec.virtualization_type is VirtualizationType.HVM
    # The manifest's root device name is kept for hvm too; an unknown architecture is left out.
    named = ebs_image_spec(
        SNAP, 2, architecture="unknown", bootable=mode,
        block_device_mapping=(DeviceMapping("root", "sda1"),),
    )  # fmt: skip
    assert named.root_device_name == "/dev/sda1" and "Architecture" not in named.request("x")


def test_without_a_kernel_no_ramdisk_is_named() -> None:
    spec = ebs_image_spec(SNAP, 1, architecture="i386", bootable=None, ramdisk_id="ari-12345678")
    assert "RamdiskId" not in spec.request("x") and "KernelId" not in spec.request("x")


@pytest.mark.parametrize("bootable", [None, BootMode.LEGACY_BIOS], ids=["paravirtual", "hvm"])
def test_the_strict_ec2_stand_in_registers_what_the_spec_says(
    bootable: BootMode | None,
    aws: AwsStandIn,
    aws_proxy: Proxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registering is one call: the parameters as the spec gives them, on a snapshot written
    by to-ebs, are accepted by EC2 (the stand-in checks the snapshot exists, is completed
    and fits the volume) and come back from DescribeImages."""
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    aws.ebs.snapshot_fate = SnapshotFate(pending_describes=0)
    image = write_image(tmp_path / "disk.img", 3 << 20, [(1 << 20, b"data" * 1000)])
    written = image_to_snapshot(image, architecture="x86_64")
    spec = ebs_image_spec(
        written.snapshot_id, written.volume_size, architecture="x86_64", bootable=bootable,
        block_device_mapping=MANIFEST_MAPPING[2:3],
    )  # fmt: skip
    ec2 = aws.client("ec2", endpoint_url=aws_proxy.endpoint_url)
    image_id = ec2.register_image(**spec.request("to-ebs test"))["ImageId"]
    (shown,) = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert shown["RootDeviceType"] == "ebs"
    assert shown["VirtualizationType"] == ("hvm" if bootable else "paravirtual")
    assert shown["RootDeviceName"] == spec.root_device_name
    root = next(m for m in shown["BlockDeviceMappings"] if "Ebs" in m)
    assert root["Ebs"]["SnapshotId"] == written.snapshot_id
    assert shown.get("BootMode") == (bootable.value if bootable else None)
    assert shown.get("EnaSupport", False) is (bootable is not None)
    (sent,) = aws.ec2.calls_to("RegisterImage")
    assert sent.params["BlockDeviceMapping.2.VirtualName"] == "ephemeral0"
