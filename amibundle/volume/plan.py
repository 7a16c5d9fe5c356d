"""What bundle-vol's image will be, decided before anything is copied.

The records every builder works from (:class:`ImageSpec`, :class:`Layout`),
the choice of builder, the source file system's facts (``blkid``), and the
image file itself: its size (given, or from the data plus headroom), its
partition table (``sfdisk`` for MBR, ``sgdisk`` for the classic GPT layout)
and, for ext2/3/4, a trial ``mke2fs`` that proves the data fits before a
byte is copied. The builders are in :mod:`amibundle.volume.build`; where
the boot partitions go and how the image boots is :mod:`amibundle.volume.boot`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from amibundle import tools
from amibundle.errors import AmibundleError, ToolNotFound, VolumeError
from amibundle.volume.boot import (
    BootMode,
    BootSetup,
    DiskTable,
    gpt_layout,
    read_table,
    table_overhead,
)
from amibundle.volume.rules import CopyRules, TreeTotals, mount_of, mount_table

__all__ = [
    "BLOCK",
    "DEFAULT_FS_TYPE",
    "EXT_TYPES",
    "LOOP_TYPES",
    "BuildJob",
    "BuildResult",
    "Builder",
    "FstabVariant",
    "ImageSpec",
    "Layout",
    "MiB",
    "Notify",
    "PartitionTable",
    "SourceFilesystem",
    "choose_builder",
    "fs_name",
    "loop_available",
    "mke2fs_options",
    "new_uuid",
    "prepare_image",
    "source_filesystem",
]

log = logging.getLogger("amibundle.volume.plan")

MiB = 1 << 20
BLOCK = 4096
EXT_TYPES = ("ext2", "ext3", "ext4")
LOOP_TYPES = (*EXT_TYPES, "xfs", "btrfs")
DEFAULT_FS_TYPE = "ext3"  # the classic default when the volume's type is unknown
_CAP_SYS_ADMIN = 21


class Builder(str, Enum):
    """How the image file is made."""

    ROOTLESS = "rootless"  # mke2fs -d and debugfs: no root, no loop device, no mount
    LOOP = "loop"  # mkfs on a loop device, mounted: root, any file system


class PartitionTable(str, Enum):
    """The image's partition table (``none``: the file system is the whole image)."""

    NONE = "none"
    MBR = "mbr"
    GPT = "gpt"


class FstabVariant(str, Enum):
    """The generated fstab: the classic tools' two, or by label/UUID."""

    DEFAULT = "default"
    LEGACY = "legacy"  # the classic's for i386
    MODERN = "modern"  # root by LABEL= or UUID= with the real type


# --- what the image should be -----------------------------------------------------


@dataclass(frozen=True)
class SourceFilesystem:
    """Facts about the file system mounted at the volume (blkid), when it is a mount point."""

    fs_type: str | None
    label: str | None
    uuid: str | None
    device: str | None
    is_mount_point: bool


def source_filesystem(volume: Path) -> SourceFilesystem:
    """Type, label and UUID of the volume's file system, like the classic (via
    ``/proc/self/mountinfo`` and ``blkid``); unknown when not a mount point."""
    mount = mount_of(Path(os.path.realpath(volume)), mount_table())
    if mount is None:
        return SourceFilesystem(None, None, None, None, False)
    facts: dict[str, str] = {}
    if mount.source.startswith("/dev/"):
        with contextlib.suppress(AmibundleError):
            out = tools.run(["blkid", "-o", "export", mount.source]).stdout
            facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return SourceFilesystem(
        fs_type=facts.get("TYPE") or mount.fs_type,
        label=facts.get("LABEL"),
        uuid=facts.get("UUID"),
        device=mount.source,
        is_mount_point=True,
    )


@dataclass(frozen=True)
class ImageSpec:
    """Everything about the image to build, decided before building."""

    path: Path  # the final image file
    size: int | None  # bytes; None: data plus headroom
    fs_type: str
    label: str | None
    uuid: str
    partition: PartitionTable
    fstab: Path | None = None
    generate_fstab: FstabVariant | None = None
    grub_config: Path | None = None
    script: Path | None = None
    keep_partial: bool = False
    force: bool = False
    max_size: int | None = None  # refuse a larger (automatic) size
    # How a partitioned image boots (None: a flat image); its ``modules``
    # None: no boot loader (bootloader=False).
    boot: BootSetup | None = None

    @property
    def boot_mode(self) -> BootMode:
        return self.boot.mode if self.boot is not None else BootMode.LEGACY_BIOS


@dataclass(frozen=True)
class Layout:
    """Where the file system sits in the image file."""

    image_size: int
    fs_offset: int
    fs_size: int
    partition: PartitionTable


@dataclass(frozen=True)
class BuildResult:
    image_path: Path
    builder: Builder
    fs_type: str
    label: str | None
    uuid: str
    partition: PartitionTable
    boot_mode: BootMode
    image_size: int
    entries: int
    data_bytes: int
    fixups: int
    seconds: float


Notify = Callable[[str], None]


@dataclass(frozen=True)
class BuildJob:
    """What a builder (:mod:`~amibundle.volume.rootless`, :mod:`~amibundle.volume.loop`)
    is given: the volume and its rules, the spec and the partial image file,
    already laid out, with its partition table read back (None: flat)."""

    volume: Path
    rules: CopyRules
    spec: ImageSpec
    layout: Layout
    partial: Path
    totals: TreeTotals
    table: DiskTable | None
    notify: Notify


# --- choosing ------------------------------------------------------------------------


def loop_available() -> tuple[bool, str]:
    """Whether the loop builder can work here, and if not, why."""
    if os.geteuid() != 0:
        return False, "not running as root"
    if not _has_capability(_CAP_SYS_ADMIN):
        return False, "no CAP_SYS_ADMIN (a container or fakeroot)"
    if not os.access("/dev/loop-control", os.R_OK | os.W_OK):
        return False, "no /dev/loop-control"
    try:
        tools.which("losetup")
    except ToolNotFound:
        return False, "losetup is not installed"
    return True, "root with loop devices"


def _has_capability(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError):
        pass
    return False


def choose_builder(requested: Builder | None, fs_type: str) -> Builder:
    """``requested``, else loop when it can work here, else rootless. Both make
    bootable partitioned images (:mod:`amibundle.volume.boot`)."""
    usable, why = loop_available()
    if requested is Builder.LOOP and not usable:
        raise VolumeError(
            f"the loop builder cannot run here: {why}", hint="use {param} rootless", param="builder"
        )
    builder = requested or (Builder.LOOP if usable else Builder.ROOTLESS)
    if builder is Builder.ROOTLESS:
        if fs_type not in EXT_TYPES:
            raise VolumeError(
                f"the rootless builder makes ext2/ext3/ext4 only, not {fs_type}",
                hint="use an ext4 file system, or the loop builder as root",
            )
    elif fs_type not in LOOP_TYPES:
        raise VolumeError(f"unsupported file system type {fs_type!r} ({', '.join(LOOP_TYPES)})")
    return builder


# --- size and layout ----------------------------------------------------------------------


def prepare_image(partial: Path, spec: ImageSpec, totals: TreeTotals, notify: Notify) -> Layout:
    """Sizes the image, writes the partition table, and for ext2/3/4 proves with
    a trial mke2fs that the data fits, all before anything is copied."""
    attempts = 4 if spec.size is None else 1
    size = spec.size or _first_guess(totals, spec.partition, spec.boot_mode)
    if spec.size is None and spec.fs_type == "xfs":
        size = max(size, 320 * MiB)  # mkfs.xfs refuses file systems under 300 MB
    for attempt in range(attempts):
        layout = _make_layout(partial, size, spec.partition, spec.boot_mode)
        if spec.fs_type not in EXT_TYPES:
            _check_fits_estimate(totals, layout, spec)
            if spec.size is None:
                _check_auto_size(layout, spec)
            return layout
        free_bytes, free_inodes = _trial_mke2fs(partial, layout, spec, totals)
        short = _shortfall(totals, free_bytes, free_inodes)
        if short is None:
            if spec.size is None:
                _check_auto_size(layout, spec)
                notify(f"image size: {layout.image_size // MiB} MiB (sized automatically)")
            return layout
        if attempt + 1 < attempts:
            size = _round_mib(size + short * 5 // 4 + 16 * MiB)
            continue
        raise VolumeError(
            f"the data does not fit: it needs about {totals.needed_bytes / MiB:.0f} MiB and "
            f"{totals.inodes} inodes, the {size // MiB} MiB image has "
            f"{free_bytes / MiB:.0f} MiB and {free_inodes} inodes free "
            f"({-(-short // MiB)} MiB short)",
            hint=f"use {{param}} {_round_mib(size + short * 5 // 4) // MiB}, or {{param}} auto "
            "to size the image from the data",
            param="size_mib",
        )
    raise AssertionError("unreachable")


def _check_auto_size(layout: Layout, spec: ImageSpec) -> None:
    if spec.max_size is not None and layout.image_size > spec.max_size:
        raise VolumeError(
            f"the data needs a {layout.image_size // MiB} MiB image, larger than EC2's "
            f"{spec.max_size // MiB} MiB limit for instance-store images",
            hint="exclude more, or {off} for other clouds",
            param="size_checks",
        )


def _first_guess(totals: TreeTotals, partition: PartitionTable, boot_mode: BootMode) -> int:
    # Data plus 10% and room for the journal, inode tables and folders to grow.
    inode_tables = totals.inodes * 256 * 2
    table = 0 if partition is PartitionTable.NONE else table_overhead(boot_mode)
    return _round_mib(totals.needed_bytes * 11 // 10 + inode_tables + 48 * MiB + table)


def _round_mib(value: int) -> int:
    return -(-value // MiB) * MiB


def _shortfall(totals: TreeTotals, free_bytes: int, free_inodes: int) -> int | None:
    """Bytes missing (None: it fits). A little slack for extent and index blocks."""
    need = totals.needed_bytes + totals.needed_bytes // 50 + MiB
    if free_inodes < totals.inodes + 16:
        return max(need - free_bytes, (totals.inodes + 16 - free_inodes) * 16384)
    return None if free_bytes >= need else need - free_bytes


def _check_fits_estimate(totals: TreeTotals, layout: Layout, spec: ImageSpec) -> None:
    # xfs/btrfs: the real check happens on the mounted file system (statvfs);
    # here only refuse what cannot possibly fit.
    if totals.needed_bytes > layout.fs_size:
        raise VolumeError(
            f"the data needs about {totals.needed_bytes / MiB:.0f} MiB, more than the "
            f"{layout.fs_size // MiB} MiB {spec.fs_type} file system",
            hint="use a larger {param}, or size the image automatically",
            param="size_mib",
        )


def _make_layout(
    partial: Path, size: int, partition: PartitionTable, boot_mode: BootMode
) -> Layout:
    """Creates the sparse image of ``size`` bytes with its partition table."""
    with open(partial, "r+b") as handle:
        handle.truncate(0)
        handle.truncate(size)
    if partition is PartitionTable.NONE:
        return Layout(size, 0, size, partition)
    if partition is PartitionTable.MBR:
        # One bootable Linux partition from 1 MiB to the end.
        script = "label: dos\nunit: sectors\n\nstart=2048, type=83, bootable\n"
        tools.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", partial], input=script)
    else:
        # The classic GPT: the boot partition (BIOS boot for GRUB's core image,
        # or the EFI system partition) at 1 MiB in the last slot, so the root
        # file system stays partition 1.
        tools.run(["sgdisk", "--clear", *gpt_layout(boot_mode), partial])
    root = read_table(partial).number(1)
    return Layout(size, root.start * 512, (root.sectors * 512) // BLOCK * BLOCK, partition)


def mke2fs_options(spec: ImageSpec, layout: Layout, totals: TreeTotals) -> list[str]:
    options = ["-F", "-q", "-t", spec.fs_type, "-b", str(BLOCK), "-U", spec.uuid]
    if spec.label:
        options += ["-L", spec.label]
    if layout.partition is not PartitionTable.NONE and spec.fs_type in ("ext2", "ext3"):
        # As the classic: 128-byte inodes and 1 inode per 8 KiB for old GRUB/kernels.
        options += ["-I", "128", "-i", "8192", "-m", "1"]
    else:
        # Room for nanosecond times, dates past 2038 and small extended
        # attributes; mke2fs would pick 128 bytes for images under 512 MiB.
        options += ["-I", "256"]
    default_inodes = layout.fs_size // (8192 if "-i" in options else 16384)
    if default_inodes < totals.inodes + 64:
        options += ["-N", str(totals.inodes + totals.inodes // 8 + 256)]
    return options


def _trial_mke2fs(
    partial: Path, layout: Layout, spec: ImageSpec, totals: TreeTotals
) -> tuple[int, int]:
    """Free bytes and inodes of the empty file system this layout gives."""
    extended = ["-E", f"offset={layout.fs_offset}"] if layout.fs_offset else []
    tools.run(
        [
            "mke2fs",
            *mke2fs_options(spec, layout, totals),
            *extended,
            partial,
            str(layout.fs_size // BLOCK),
        ]
    )
    out = tools.run(["dumpe2fs", "-h", fs_name(partial, layout)]).stdout
    fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\S+)", out, re.MULTILINE))
    return int(fields["Free blocks"]) * int(fields["Block size"]), int(fields["Free inodes"])


def fs_name(image: Path, layout: Layout) -> str:
    """How e2fsprogs names a file system at an offset inside a file."""
    return f"{image}?offset={layout.fs_offset}" if layout.fs_offset else str(image)


def new_uuid() -> str:
    return str(uuidlib.uuid4())
