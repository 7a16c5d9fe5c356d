"""ImageRegistration on its own (no AWS): the short form of block-device mappings read back
exactly (a property test over the form), and what a request takes from a manifest."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amibundle.ec2.registration import (
    VOLUME_TYPES,
    BlockDeviceMapping,
    ImageRegistration,
    parse_mapping,
)
from amibundle.errors import UsageError
from amibundle.format.manifest import DeviceMapping, Manifest

DEVICES = st.from_regex(r"(/dev/)?(sd|xvd|nvme)[a-z0-9]{1,4}", fullmatch=True)
SNAPSHOTS = st.from_regex(r"snap-([0-9a-f]{8}|[0-9a-f]{17})", fullmatch=True)


def _dev(name: str) -> str:
    return name if name.startswith("/dev/") else f"/dev/{name}"


@given(
    device=DEVICES,
    snapshot=st.none() | SNAPSHOTS,
    size=st.none() | st.integers(1, 65536),
    delete=st.none() | st.booleans(),
    kind=st.none() | st.sampled_from(VOLUME_TYPES),
    iops=st.none() | st.integers(100, 64000),
)
def test_ebs_short_form_reads_back_exactly(
    device: str,
    snapshot: str | None,
    size: int | None,
    delete: bool | None,
    kind: str | None,
    iops: int | None,
) -> None:
    if snapshot is None and size is None:
        size = 8
    fields = [snapshot or "", str(size or ""), "" if delete is None else str(delete).lower(),
              kind or "", str(iops or "")]  # fmt: skip
    while fields and not fields[-1]:
        fields.pop()
    mapping = parse_mapping(f"{device}={':'.join(fields)}")
    assert mapping == BlockDeviceMapping(
        _dev(device), snapshot_id=snapshot, volume_size=size, delete_on_termination=delete,
        volume_type=kind, iops=iops,
    )  # fmt: skip
    ebs = mapping.to_api()["Ebs"]
    assert ebs.get("SnapshotId") == snapshot and ebs.get("VolumeSize") == size


@given(device=DEVICES, index=st.integers(0, 23))
def test_instance_store_and_no_device_forms(device: str, index: int) -> None:
    assert parse_mapping(f"{device}=ephemeral{index}").to_api() == {
        "DeviceName": _dev(device),
        "VirtualName": f"ephemeral{index}",
    }
    assert parse_mapping(f"{device}=none").to_api() == {"DeviceName": _dev(device), "NoDevice": ""}


@pytest.mark.parametrize(
    "text",
    ["sdb", "=ephemeral0", "sdb=", "sdb=ephemeral", "sdb=snap-1:8", "sdb=:0", "sdb=:8:maybe",
     "sdb=:8:true:gp9", "sdb=:::gp3", "s/../db=ephemeral0"],
)  # fmt: skip
def test_bad_short_forms_are_refused(text: str) -> None:
    with pytest.raises(UsageError) as error:
        parse_mapping(text)
    assert error.value.param == "block_device_mappings"


MANIFEST = Manifest(
    name="img", user="111122223333", digest="0" * 40, size=1, bundled_size=1,
    ec2_encrypted_key="", user_encrypted_key="", ec2_encrypted_iv="", user_encrypted_iv="",
    parts=(), architecture="x86_64",
    block_device_mapping=(
        DeviceMapping("ami", "sda1"), DeviceMapping("root", "/dev/sda1"),
        DeviceMapping("ephemeral0", "sdb"), DeviceMapping("swap", "sda3"),
    ),
)  # fmt: skip


def test_a_request_takes_what_it_lacks_from_the_manifest() -> None:
    plain = ImageRegistration.create(name="plain").request("b/k", MANIFEST)
    assert plain == {
        "Name": "plain",
        "ImageLocation": "b/k",
        "VirtualizationType": "hvm",
        "Architecture": "x86_64",
        "RootDeviceName": "/dev/sda1",
        "BlockDeviceMappings": [{"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}],
    }
    with_kernel = replace(MANIFEST, kernel_id="aki-88aa75e1", ramdisk_id="ari-88aa75e1")
    pv = ImageRegistration.create(
        name="pv image", block_device_mappings=["sdb=none"], root_device_name="xvda"
    ).request("b/k", with_kernel)
    assert (pv["VirtualizationType"], pv["KernelId"], pv["RamdiskId"]) == (
        "paravirtual",
        "aki-88aa75e1",
        "ari-88aa75e1",
    )
    assert pv["RootDeviceName"] == "/dev/xvda"
    assert pv["BlockDeviceMappings"] == [{"DeviceName": "/dev/sdb", "NoDevice": ""}]  # ours win
    hvm = ImageRegistration.create(name="hvm", virtualization_type="hvm").request(
        "b/k", with_kernel
    )
    assert "KernelId" not in hvm and "RamdiskId" not in hvm  # the manifest's kernel is pv-only
