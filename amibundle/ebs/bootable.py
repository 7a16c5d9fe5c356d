"""``to-ebs --make-bootable``: a partitionless file-system image written as a
partitioned disk that boots on its own (HVM), with GRUB installed the
loop-free way of :mod:`amibundle.volume.boot` and :mod:`amibundle.volume.grub`.

The image's file system is not changed by a byte: it becomes partition 1
(UUID and label kept), shifted as it streams to ``root_offset``. GRUB lives
beside it, where it needs no write into that file system::

    MBR: [MBR + boot code][GRUB core in the gap][p2: GRUB's files, ext2][p1: the image]
    GPT: [prot. MBR + boot code][GPT][p128: BIOS boot (core) or ESP][p2: GRUB][p1: the image][GPT]

Partition 2 holds ``/boot/grub`` (``grub.cfg`` and the modules, staged by
:func:`~amibundle.volume.boot.stage_boot_files`); the core image finds it by its
own UUID, and ``grub.cfg`` finds the image's file system by *its* UUID and
boots the newest ``/boot/vmlinuz-*`` there (root by UUID with an initrd, else
by partition 1's PARTUUID, as bundle-vol does). Partition 1 is last, so a
larger volume can grow it (growpart) without moving anything.

Steps: :func:`plan_disk` before the snapshot is started (tools, GRUB modules,
where partition 1 starts); :func:`probe_root` reads the file system's
superblock and ``/boot`` (with debugfs, read-only) from an image file;
:func:`build_boot_region` makes a sparse file of the whole disk holding only
the partition tables, GRUB and partition 2, whose blocks are then sent. It
never overlaps the file system: partition 1 starts on a MiB boundary and the
disk keeps at least a MiB free after it.
"""

from __future__ import annotations

import os
import struct
import tempfile
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amibundle import tools
from amibundle.ebs.blocks import BLOCK_SIZE, ZERO_BLOCK
from amibundle.errors import BootError, UsageError
from amibundle.files import open_input
from amibundle.format.tar import Extent
from amibundle.results import JsonRecord
from amibundle.sparse import data_extents
from amibundle.validate import as_enum
from amibundle.volume import boot, grub
from amibundle.volume.boot import BootMode, BootSetup, KernelFiles, firmware_mode
from amibundle.volume.plan import PartitionTable

__all__ = [
    "BootDisk",
    "BootableSpec",
    "DiskPlan",
    "RootFs",
    "boot_region_blocks",
    "build_boot_region",
    "plan_disk",
    "probe_root",
]

MiB = 1 << 20
SECTOR = grub.SECTOR
_FIRST = 2048  # the first partition starts at 1 MiB
_TAIL = MiB  # kept free after partition 1's file system: GPT's backup lives there
_GRUB_LABEL = "amibundle-grub"
# ext superblock: at byte 1024; magic, feature flags and UUID offsets within it.
_SUPER = 1024
_EXT_MAGIC = 0xEF53
_EXT4_INCOMPAT = 0x40 | 0x80 | 0x200 | 0x2000  # extents, 64bit, flex_bg, ...
_EXT4_RO_COMPAT = 0x8 | 0x10 | 0x20 | 0x40 | 0x400  # huge_file, gdt_csum, dir_nlink, ...
_HAS_JOURNAL = 0x4


@dataclass(frozen=True)
class BootableSpec:
    """How ``--make-bootable`` lays the disk out: its partition table (MBR
    or GPT) and the firmware that starts it (UEFI needs GPT)."""

    partition: PartitionTable = PartitionTable.GPT
    boot_mode: BootMode = BootMode.LEGACY_BIOS

    def __post_init__(self) -> None:
        table = as_enum(PartitionTable, self.partition, "partition")
        mode = firmware_mode(self.boot_mode, "boot_mode")
        if table is PartitionTable.NONE:
            raise UsageError("{param} must be mbr or gpt for a bootable disk", param="partition")
        if mode is BootMode.UEFI and table is not PartitionTable.GPT:
            raise UsageError("{param} uefi needs a GPT disk", param="boot_mode")
        object.__setattr__(self, "partition", table)
        object.__setattr__(self, "boot_mode", mode)


@dataclass(frozen=True)
class DiskPlan:
    """Where everything goes, in sectors; decided before the stream starts."""

    spec: BootableSpec
    modules: Path  # GRUB's module folder (this machine's)
    firmware_start: int  # BIOS boot partition or ESP (GPT); 0 for MBR (the gap)
    firmware_sectors: int
    grub_start: int
    grub_sectors: int
    root_start: int

    @property
    def root_offset(self) -> int:
        return self.root_start * SECTOR

    def disk_bytes(self, image_size: int) -> int:
        """The smallest disk that holds this layout and an image of ``image_size``."""
        return self.root_offset + image_size + _TAIL


def _align(sectors: int, to: int = _FIRST) -> int:
    return -(-sectors // to) * to


def _grub_partition_sectors(modules: Path) -> int:
    """Room for GRUB's modules and grub.cfg on ext2, with a margin; MiB-aligned."""
    files = sum(path.stat().st_size for path in grub.module_files(modules))
    return _align(max(8 * MiB, files * 3 // 2 + 2 * MiB) // SECTOR)


def plan_disk(spec: BootableSpec) -> DiskPlan:
    """Checks the tools and GRUB here (BootError or ToolNotFound naming the
    packages) and lays the disk out."""
    platform = spec.boot_mode.platform
    modules = platform.host_modules()
    if not all((modules / name).is_file() for name in platform.required):
        raise BootError(
            f"no GRUB 2 for {platform.target} on this machine ({modules})",
            hint=f"apt-get install {platform.packages}",
        )
    needed = ["grub-mkimage", "mke2fs", "debugfs"]
    needed.append("sgdisk" if spec.partition is PartitionTable.GPT else "sfdisk")
    needed += ["sfdisk"]  # read_table
    if spec.boot_mode is BootMode.UEFI:
        needed += ["mkfs.vfat", "mmd", "mcopy"]
    for tool in needed:
        tools.which(tool, tools.PACKAGES.get(tool, tool))
    if spec.boot_mode is BootMode.UEFI:
        firmware_start, firmware_sectors = _FIRST, boot.ESP_SECTORS
    elif spec.partition is PartitionTable.GPT:
        firmware_start, firmware_sectors = _FIRST, _FIRST  # 1 MiB BIOS boot partition
    else:
        firmware_start, firmware_sectors = 0, 0  # the core image goes into the MBR gap
    grub_start = _align(firmware_start + firmware_sectors) if firmware_sectors else _FIRST
    grub_sectors = _grub_partition_sectors(modules)
    return DiskPlan(
        spec=spec,
        modules=modules,
        firmware_start=firmware_start,
        firmware_sectors=firmware_sectors,
        grub_start=grub_start,
        grub_sectors=grub_sectors,
        root_start=_align(grub_start + grub_sectors),
    )


# --- the image's file system ---------------------------------------------------------------


@dataclass(frozen=True)
class RootFs:
    """What the boot loader needs to know of the image's file system."""

    uuid: str
    fs_type: str  # ext2, ext3 or ext4
    kernel: KernelFiles


def read_superblock(image: Path) -> tuple[str, str]:
    """The ext file system's (UUID, type) from its superblock; BootError when
    the image holds no ext2/3/4 file system at its start."""
    fd = open_input(image, "image")
    try:
        block = os.pread(fd, 1024, _SUPER)
    finally:
        os.close(fd)
    if len(block) < 1024 or struct.unpack_from("<H", block, 56)[0] != _EXT_MAGIC:
        raise BootError(
            "--make-bootable needs an image that is one ext2/3/4 file system (no partition "
            "table): none starts at the image's first byte"
        )
    compat, incompat, ro_compat = struct.unpack_from("<III", block, 92)
    if incompat & _EXT4_INCOMPAT or ro_compat & _EXT4_RO_COMPAT:
        fs_type = "ext4"
    else:
        fs_type = "ext3" if compat & _HAS_JOURNAL else "ext2"
    return str(uuidlib.UUID(bytes=block[104:120])), fs_type


def boot_files(image: Path) -> list[str]:
    """The names of the regular files in the image's ``/boot``, read with
    debugfs (read-only, bitmaps skipped): no mount, no loop device."""
    listing = tools.run(["debugfs", "-c", "-R", "ls -p /boot", image]).stdout
    names = []
    for line in listing.splitlines():
        # /inode/mode/uid/gid/name/size/ ; names cannot hold a slash.
        fields = line.split("/")
        if len(fields) >= 7 and fields[2].isdigit() and int(fields[2], 8) >> 12 == 0o10:
            names.append(fields[5])
    return names


def probe_root(image: Path) -> RootFs:
    """The UUID, type and kernel of the file system in ``image``."""
    uuid, fs_type = read_superblock(image)
    try:
        kernel = boot.choose_kernel(boot_files(image), "the image")
    except BootError:
        raise BootError(
            "the image has no kernel (/boot/vmlinuz-VERSION) for the boot loader to start",
            hint="--make-bootable is for an image that carries its own kernel in /boot",
        ) from None
    return RootFs(uuid, fs_type, kernel)


# --- the boot region -------------------------------------------------------------------------


@dataclass(frozen=True)
class BootDisk(JsonRecord):
    """The bootable disk made: reported with the snapshot."""

    partition: PartitionTable
    boot_mode: BootMode
    root_offset: int  # bytes: where partition 1 (the image's file system) starts
    root_uuid: str
    root_partuuid: str
    kernel: str  # /boot/vmlinuz-VERSION in the image
    initrd: str | None
    grub_partition_uuid: str


def _write_table(disk: Path, plan: DiskPlan) -> None:
    grub_end = plan.grub_start + plan.grub_sectors - 1
    if plan.spec.partition is PartitionTable.MBR:
        script = (
            "label: dos\n"
            f"label-id: 0x{uuidlib.uuid4().int & 0xFFFFFFFF:08x}\n\n"
            f"start={plan.root_start}, type=83, bootable\n"
            f"start={plan.grub_start}, size={plan.grub_sectors}, type=83\n"
        )
        tools.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk], input=script)
        return
    firmware_end = plan.firmware_start + plan.firmware_sectors - 1
    code, name = (
        ("EF00", "EFI System Partition")
        if plan.spec.boot_mode is BootMode.UEFI
        else ("EF02", "BIOS Boot Partition")
    )
    tools.run(
        [
            "sgdisk",
            "--clear",
            f"--new=128:{plan.firmware_start}:{firmware_end}",
            f"--typecode=128:{code}",
            f"--change-name=128:{name}",
            f"--new=2:{plan.grub_start}:{grub_end}",
            "--typecode=2:8300",
            f"--change-name=2:{_GRUB_LABEL}",
            f"--new=1:{plan.root_start}:0",
            "--typecode=1:8300",
            "--change-name=1:Linux",
            disk,
        ]
    )


def build_boot_region(
    work: Path, plan: DiskPlan, disk_bytes: int, root: RootFs
) -> tuple[Path, BootDisk]:
    """A sparse file of the whole disk (``disk_bytes``) in ``work`` holding
    the partition table, GRUB and its partition; partition 1 stays a hole."""
    disk = work / "disk"
    with open(disk, "wb") as handle:
        handle.truncate(disk_bytes)
    _write_table(disk, plan)
    table = boot.read_table(disk)
    setup = BootSetup(plan.spec.boot_mode, root.uuid, root.fs_type, plan.modules)
    staging = work / "grub-tree"
    staging.mkdir()
    boot.stage_boot_files(staging, setup, table, kernel=root.kernel)
    grub_uuid = str(uuidlib.uuid4())
    tools.run(
        [
            "mke2fs", "-q", "-F", "-t", "ext2", "-U", grub_uuid, "-L", _GRUB_LABEL,
            "-d", staging, "-E", f"offset={plan.grub_start * SECTOR},nodiscard",
            disk, f"{plan.grub_sectors * SECTOR // 1024}k",
        ]
    )  # fmt: skip
    # The core image finds GRUB's own partition (its modules, grub.cfg) by UUID.
    boot.finish_disk(disk, BootSetup(plan.spec.boot_mode, grub_uuid, "ext2", plan.modules), table)
    return disk, BootDisk(
        partition=plan.spec.partition,
        boot_mode=plan.spec.boot_mode,
        root_offset=plan.root_offset,
        root_uuid=root.uuid,
        root_partuuid=table.root_partuuid(),
        kernel=root.kernel.kernel,
        initrd=root.kernel.initrd,
        grub_partition_uuid=grub_uuid,
    )


def boot_region_blocks(disk: Path, plan: DiskPlan, image_size: int) -> Iterator[tuple[int, bytes]]:
    """The blocks of the boot region file that hold data, each checked to be
    clear of the file system's blocks."""
    fs_first = plan.root_offset // BLOCK_SIZE
    fs_last = (plan.root_offset + image_size - 1) // BLOCK_SIZE
    fd = open_input(disk, "boot region")
    try:
        size = os.fstat(fd).st_size
        indexes = sorted(
            {index for extent in data_extents(fd, size) for index in _blocks_of(extent)}
        )
        for index in indexes:
            block = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
            block += bytes(BLOCK_SIZE - len(block))
            if block == ZERO_BLOCK:
                continue
            if fs_first <= index <= fs_last:
                raise BootError(f"the boot loader's block {index} would overwrite the file system")
            yield index, block
    finally:
        os.close(fd)


def _blocks_of(extent: Extent) -> range:
    return range(extent.offset // BLOCK_SIZE, -(-(extent.offset + extent.length) // BLOCK_SIZE))


def work_folder(parent: Path | None) -> tempfile.TemporaryDirectory[str]:
    """A private folder (0700) for the boot region and GRUB's staged tree."""
    return tempfile.TemporaryDirectory(prefix="amibundle-boot-", dir=parent)
