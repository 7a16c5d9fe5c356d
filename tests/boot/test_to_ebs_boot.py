"""A bundle of a partitionless volume, made by bundle-vol as instance-store AMIs are,
written by ``to-ebs --make-bootable`` into a snapshot of the strict EBS stand-in, read back
block by block (ListSnapshotBlocks, GetSnapshotBlock) into a disk, and booted under qemu
with no -kernel: SeaBIOS -> GRUB (its core in the BIOS boot partition, its files in
partition 2) -> the image's own kernel from partition 1 -> /sbin/init, which reports.
The same snapshot is then registered: RegisterImage's parameters as sent are those of an
HVM image that boots this way (legacy BIOS, ENA, the snapshot as /dev/xvda)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from amibundle.ebs import BootableSpec, bundle_to_snapshot, convert
from amibundle.ebs.register import register_snapshot
from amibundle.volume.plan import PartitionTable
from tests.support.aws import AwsStandIn
from tests.support.boot import BOOT_TIME, BootKeys, need
from tests.support.bootroot import RootTree
from tests.support.ebs_readback import read_back
from tests.support.qemu import boot, missing_pieces
from tests.support.s3proxy import Proxy
from tests.support.volumes import cli

pytestmark = pytest.mark.slow

LABEL = "bootroot"


def flat_bundle(tree: RootTree, out: Path, keys: BootKeys) -> Path:
    """bundle-vol's partitionless image of the boot tree (rootless, as nobody)."""
    done = cli(
        [
            "-v", str(tree.root), "-d", str(out), "-p", "flat.img", "--builder", "rootless",
            "--fs-type", "ext4", "--size", "auto", "--label", LABEL, "--generate-fstab=modern",
            "-P", "none", "--no-inherit", "-c", str(keys.cert), "-k", str(keys.key),
            "--ec2cert", str(keys.ec2_cert), "-u", "123456789012", "-r", "x86_64", "--json",
        ],
        unprivileged=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return Path(json.loads(done.stdout)["bundle"]["manifest_path"])


def test_a_snapshot_made_bootable_boots(
    root_tree: RootTree,
    boot_keys: BootKeys,
    out_dir: Path,
    aws: AwsStandIn,
    aws_proxy: Proxy,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    need(missing_pieces(uefi=False), "apt-get install qemu-system-x86")
    bundle_dir = out_dir / "bundle"
    bundle_dir.mkdir()
    bundle_dir.chmod(0o777)
    manifest = flat_bundle(root_tree, bundle_dir, boot_keys)
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(convert, "WAIT_POLL", 0.01)
    result = bundle_to_snapshot(
        manifest, private_key=boot_keys.key, bootable=BootableSpec(PartitionTable.GPT), wait=True
    )
    assert result.bootable is not None
    disk = out_dir / "disk.img"
    read_back(aws.client("ebs"), result.snapshot_id, disk, ec2=aws.client("ec2"))

    run = boot(disk, out_dir)
    record_property(f"{BOOT_TIME}to-ebs-gpt-bios", run.seconds)
    assert "begin" in run.report and "end" in run.report, f"no report from init:\n{run.tail()}"
    assert run.one("kernel") == root_tree.kernel_version
    # GRUB, from partition 2, started the image's own kernel with partition 1's PARTUUID,
    # read here from the disk with sfdisk.
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    first = next(p for p in table["partitions"] if p["node"] == f"{disk}1")
    cmdline = run.one("cmdline").split()
    assert f"BOOT_IMAGE=/boot/vmlinuz-{root_tree.kernel_version}" in cmdline
    assert f"root=PARTUUID={first['uuid'].lower()}" in cmdline
    assert result.bootable.root_partuuid == first["uuid"].lower()
    assert run.one("firmware") == "bios"
    assert run.one("rootdev") == "nvme0n1p1"
    fs_type, options = run.one("rootmount").split()
    assert fs_type == "ext4" and "ro" in options.split(",")
    files = dict(line.split(" ", 1) for line in run.report.get("file", []))
    assert files == root_tree.expected_files()
    # The image's fstab names its file system by label: found in partition 1.
    assert run.one("fstab") == f"LABEL={LABEL} /dev/nvme0n1p1"
    assert "rw" in run.one("remount").split()[1].split(",")

    registered = register_snapshot(result, "bootable-root")
    (call,) = aws.ec2.calls_to("RegisterImage")
    params = dict(call.params)
    assert {key: params.get(key) for key in ("Name", "VirtualizationType", "BootMode",
            "EnaSupport", "Architecture", "RootDeviceName")} == {
        "Name": "bootable-root", "VirtualizationType": "hvm", "BootMode": "legacy-bios",
        "EnaSupport": "true", "Architecture": "x86_64", "RootDeviceName": "/dev/xvda",
    }  # fmt: skip
    assert params["BlockDeviceMapping.1.DeviceName"] == "/dev/xvda"
    assert params["BlockDeviceMapping.1.Ebs.SnapshotId"] == result.snapshot_id
    assert "KernelId" not in params and "RamdiskId" not in params
    assert registered.image_id.startswith("ami-")
