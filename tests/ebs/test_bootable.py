"""--make-bootable without booting (tests/boot/test_to_ebs_boot.py boots one): the disk read
back from the snapshot has the partition table asked for, the image's file system byte for
byte in partition 1, GRUB's files in partition 2 naming the image's newest kernel, and the
boot code where the firmware looks; everything that can be refused is refused before the
snapshot is started. The disk is read with sfdisk, debugfs, blkid and mtools, not with
amibundle's own readers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from amibundle.ebs import BootableSpec, bundle_to_snapshot, image_to_snapshot
from amibundle.errors import BootError
from amibundle.volume.boot import BIOS_BOOT_TYPE, ESP_TYPE, BootMode
from amibundle.volume.plan import PartitionTable
from tests.support.aws import AwsStandIn
from tests.support.bundling import bundle_for
from tests.support.common import Identity, write_image
from tests.support.ebs_readback import read_back
from tests.support.s3proxy import Proxy

MIB = 1 << 20


@pytest.fixture
def env(aws: AwsStandIn, aws_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> Proxy:
    for name, value in aws.environment(aws_proxy.endpoint_url).items():
        monkeypatch.setenv(name, value)
    return aws_proxy


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True).stdout


def ext4_image(folder: Path, *, kernels: tuple[str, ...] = ("5.10.0-9", "5.10.0-10")) -> Path:
    """A 24 MiB ext4 file system with fake kernels in /boot, the newest with an initrd, and
    a symbolic link that must not count as a kernel."""
    tree = folder / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "etc").mkdir()
    (tree / "etc/hostname").write_text("bootable\n")
    for version in kernels:
        (tree / f"boot/vmlinuz-{version}").write_bytes(os.urandom(200_000))
    if kernels:
        (tree / f"boot/initrd.img-{kernels[-1]}").write_bytes(os.urandom(50_000))
        (tree / "boot/vmlinuz-99").symlink_to(f"vmlinuz-{kernels[0]}")
    image = folder / "root.img"
    run("mke2fs", "-q", "-t", "ext4", "-L", "rootfs", "-d", tree, image, "24M")
    return image


def partition_file(disk: Path, start_sector: int, sectors: int, out: Path) -> Path:
    with open(disk, "rb") as source, open(out, "wb") as target:
        source.seek(start_sector * 512)
        target.write(source.read(sectors * 512))
    return out


def check_disk(
    disk: Path, image: Path, table_kind: str, mode: str, report: dict[str, object]
) -> None:
    table = json.loads(run("sfdisk", "--json", disk))["partitiontable"]
    assert table["label"] == ("gpt" if table_kind == "gpt" else "dos")
    parts = {int(p["node"][len(str(disk)) :]): p for p in table["partitions"]}
    root, grub = parts[1], parts[2]
    assert root["start"] * 512 == report["root_offset"]
    assert root["start"] > grub["start"]  # partition 1 is last: it can grow
    # Partition 1 is the image, byte for byte; its UUID is the image's.
    size = image.stat().st_size
    with open(disk, "rb") as handle:
        handle.seek(root["start"] * 512)
        assert handle.read(size) == image.read_bytes()
    uuid = run("blkid", "-p", "-o", "value", "-s", "UUID", image).strip()
    assert report["root_uuid"] == uuid
    # GRUB's partition: grub.cfg boots the newest kernel, root by UUID (it has an initrd).
    grub_fs = partition_file(disk, grub["start"], grub["size"], disk.parent / "grub.part")
    config = run("debugfs", "-R", "cat /boot/grub/grub.cfg", grub_fs)
    assert f"search --no-floppy --fs-uuid --set=root {uuid}" in config
    assert f"linux /boot/vmlinuz-5.10.0-10 root=UUID={uuid} ro" in config
    assert "initrd /boot/initrd.img-5.10.0-10" in config
    target = "x86_64-efi" if mode == "uefi" else "i386-pc"
    assert "normal.mod" in run("debugfs", "-R", f"ls /boot/grub/{target}", grub_fs)
    grub_uuid = run("blkid", "-p", "-o", "value", "-s", "UUID", grub_fs).strip()
    assert report["grub_partition_uuid"] == grub_uuid
    with open(disk, "rb") as handle:
        head = handle.read(4 * MIB)
    assert head[510:512] == b"\x55\xaa"
    if mode == "uefi":
        (esp,) = [p for p in table["partitions"] if p["type"] == ESP_TYPE]
        listing = subprocess.run(
            ["mdir", "-i", f"{disk}@@{esp['start'] * 512}", "::/EFI/BOOT"],
            capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
            check=True,
        ).stdout  # fmt: skip
        assert "BOOTX64" in listing
        return
    assert any(head[:440]), "no boot code in the MBR"
    if table_kind == "gpt":
        (bios_boot,) = [p for p in table["partitions"] if p["type"] == BIOS_BOOT_TYPE]
        core_at = bios_boot["start"] * 512
    else:
        core_at = 512
    assert any(head[core_at : core_at + 512]), "no GRUB core image where boot.img looks"


LAYOUTS = [
    pytest.param("gpt", "legacy-bios", id="gpt-bios"),
    pytest.param("mbr", "legacy-bios", id="mbr-bios"),
    pytest.param("gpt", "uefi", id="gpt-uefi"),
]


@pytest.mark.parametrize(("table", "mode"), LAYOUTS)
def test_an_image_file_becomes_a_bootable_disk(
    table: str, mode: str, env: Proxy, aws: AwsStandIn, tmp_path: Path
) -> None:
    image = ext4_image(tmp_path)
    spec = BootableSpec(PartitionTable(table), BootMode(mode))
    result = image_to_snapshot(image, bootable=spec)
    assert result.bootable is not None
    disk = tmp_path / "disk"
    back = read_back(aws.client("ebs"), result.snapshot_id, disk, ec2=aws.client("ec2"))
    assert back.volume_gib == result.volume_size == 1
    check_disk(disk, image, table, mode, result.bootable.to_dict())
    assert result.registration.virtualization_type.value == "hvm"
    assert result.registration.boot_mode is BootMode(mode)
    # Written: the boot region, the file system's blocks, GPT's backup in the last block.
    last = result.volume_size * 2048 - 1
    assert (last in back.blocks) == (table == "gpt")


def test_a_bundle_becomes_a_bootable_disk_and_its_work_files_go(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    """From a bundle the file system is also kept in a sparse file while it streams, to
    read its /boot at the end; the work folder is empty afterwards."""
    image = ext4_image(tmp_path)
    out, work = tmp_path / "bundle", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    bundle = bundle_for(image, user_id, destination=out)
    spec = BootableSpec(PartitionTable.MBR)
    result = bundle_to_snapshot(
        bundle.manifest_path, private_key=user_id.key, bootable=spec, work_dir=work
    )
    assert result.bootable is not None and list(work.iterdir()) == []
    disk = tmp_path / "disk"
    read_back(aws.client("ebs"), result.snapshot_id, disk, ec2=aws.client("ec2"))
    check_disk(disk, image, "mbr", "legacy-bios", result.bootable.to_dict())


def test_what_cannot_boot_is_refused_before_the_snapshot_starts(
    env: Proxy, aws: AwsStandIn, tmp_path: Path
) -> None:
    no_fs = write_image(tmp_path / "data.img", 4 * MIB, [(0, os.urandom(MIB))])
    with pytest.raises(BootError, match="needs an image that is one ext2/3/4 file system"):
        image_to_snapshot(no_fs, bootable=BootableSpec())
    no_kernel = ext4_image(tmp_path / "k", kernels=())
    with pytest.raises(BootError, match=r"the image has no kernel \(/boot/vmlinuz-VERSION\)"):
        image_to_snapshot(no_kernel, bootable=BootableSpec())
    assert env.requests == []


def test_a_bundle_without_a_kernel_is_never_completed(
    env: Proxy, aws: AwsStandIn, tmp_path: Path, user_id: Identity
) -> None:
    """A bundle's /boot can only be read once it has streamed: the snapshot is then
    abandoned like after any other failure."""
    image = ext4_image(tmp_path, kernels=())
    out = tmp_path / "bundle"
    out.mkdir()
    bundle = bundle_for(image, user_id, destination=out)
    with pytest.raises(BootError, match="no kernel"):
        bundle_to_snapshot(bundle.manifest_path, private_key=user_id.key, bootable=BootableSpec())
    assert aws.ebs.calls_to("PutSnapshotBlock") and not aws.ebs.calls_to("CompleteSnapshot")
    assert aws.client("ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
