"""Making bundle-vol's partitioned images bootable, for either builder, without loop devices.

Three steps, each taking plain values so that any builder can call them:

1. :func:`prepare_boot` (before anything is copied): the boot mode's GRUB is
   at hand (the volume's own modules in ``/usr/lib/grub/<target>``, else the
   host's), and the volume has a kernel in ``/boot``. Missing pieces are one
   clear error naming the Debian packages, not a failure after the copy.
2. :func:`stage_boot_files` (into the image's tree, before the file system is
   closed): ``/boot/grub/grub.cfg`` (the old one kept as ``grub.cfg.old``)
   and GRUB's modules in ``/boot/grub/<target>``.
3. :func:`finish_disk` (on the finished image file): the boot code, with
   :mod:`amibundle.volume.grub`.

The partition tables are :func:`gpt_layout` (with :func:`table_overhead`
for sizing) and MBR's single bootable partition; :func:`read_table` reads a
table back. The kernel finds its root by ``UUID=`` when the image has an
initrd to resolve it, else by ``PARTUUID=``, which the kernel resolves by
itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from amibundle import tools
from amibundle.errors import BootError, UsageError
from amibundle.files import write_new
from amibundle.volume import grub
from amibundle.volume.grub import BIOS, EFI, SECTOR, GrubPlatform, KernelFiles

__all__ = [
    "BIOS_BOOT_TYPE",
    "ESP_SECTORS",
    "ESP_TYPE",
    "BootMode",
    "FIRMWARE_MODES",
    "firmware_mode",
    "BootSetup",
    "DiskTable",
    "KernelFiles",
    "Partition",
    "choose_kernel",
    "find_kernel",
    "finish_disk",
    "gpt_layout",
    "prepare_boot",
    "read_table",
    "stage_boot_files",
    "table_overhead",
]

MiB = 1 << 20
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_SECTORS = 32 * MiB // SECTOR
_BOOT_SLOT = 128  # the boot partition's GPT slot: the root file system stays partition 1
_FIRST = 2048  # partitions start at 1 MiB


class BootMode(str, Enum):
    """How the instance's firmware starts the image: EC2's ``BootMode``, the one
    definition for bundle-vol, to-ebs and register. GRUB is installed for one
    firmware (:data:`FIRMWARE_MODES`); ``uefi-preferred`` is only registered."""

    LEGACY_BIOS = "legacy-bios"
    UEFI = "uefi"
    UEFI_PREFERRED = "uefi-preferred"

    @property
    def platform(self) -> GrubPlatform:
        return EFI if self is BootMode.UEFI else BIOS


FIRMWARE_MODES = (BootMode.LEGACY_BIOS, BootMode.UEFI)


def firmware_mode(value: object, param: str) -> BootMode:
    """``value`` (a member or its value) as one of :data:`FIRMWARE_MODES`."""
    for mode in FIRMWARE_MODES:
        if value is mode or value == mode.value:
            return mode
    choices = ", ".join(mode.value for mode in FIRMWARE_MODES)
    raise UsageError(f"{{param}} must be one of {choices}, not {value!r}", param=param)


# --- partition tables -----------------------------------------------------------------


def gpt_layout(mode: BootMode) -> list[str]:
    """``sgdisk`` arguments for a GPT image: the boot partition in the last slot
    at 1 MiB (BIOS boot for GRUB's core image, or the EFI system partition),
    the root file system as partition 1 after it, to the end."""
    if mode is BootMode.UEFI:
        end, code, name = _FIRST + ESP_SECTORS - 1, "EF00", "EFI System Partition"
    else:
        end, code, name = 2 * _FIRST - 1, "EF02", "BIOS Boot Partition"
    return [
        f"--new={_BOOT_SLOT}:{_FIRST}:{end}",
        f"--typecode={_BOOT_SLOT}:{code}",
        f"--change-name={_BOOT_SLOT}:{name}",
        f"--new=1:{end + 1}:0",
        "--typecode=1:8300",
        "--change-name=1:Linux",
    ]


def table_overhead(mode: BootMode) -> int:
    """Bytes a partitioned image needs besides its root file system (sizing headroom)."""
    return 3 * MiB + (ESP_SECTORS * SECTOR if mode is BootMode.UEFI else 0)


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # sectors
    sectors: int
    type: str  # MBR type in hex ("83") or GPT type GUID, upper case
    uuid: str | None  # GPT partition GUID


@dataclass(frozen=True)
class DiskTable:
    """An image file's partition table, as ``sfdisk --json`` reports it."""

    label: str  # dos or gpt
    disk_id: str  # MBR disk signature (0x...) or GPT disk GUID
    partitions: tuple[Partition, ...]

    def number(self, number: int) -> Partition:
        for part in self.partitions:
            if part.number == number:
                return part
        raise BootError(f"the image's partition table has no partition {number}")

    def of_type(self, type_guid: str) -> Partition | None:
        return next((p for p in self.partitions if p.type == type_guid), None)

    def root_partuuid(self) -> str:
        """How the kernel names partition 1 in ``root=PARTUUID=``."""
        if self.label == "dos":
            return f"{int(self.disk_id, 16):08x}-01"
        uuid = self.number(1).uuid
        if not uuid:
            raise BootError("partition 1 of the image has no GPT partition GUID")
        return uuid.lower()


def read_table(image: Path) -> DiskTable:
    table = json.loads(tools.run(["sfdisk", "--json", image]).stdout)["partitiontable"]
    device = str(table.get("device", image))
    parts = []
    for entry in table.get("partitions", []):
        suffix = str(entry["node"])[len(device) :].lstrip("p")
        parts.append(
            Partition(
                number=int(suffix),
                start=int(entry["start"]),
                sectors=int(entry["size"]),
                type=str(entry["type"]).upper(),
                uuid=entry.get("uuid"),
            )
        )
    return DiskTable(str(table["label"]), str(table["id"]), tuple(parts))


# --- before the copy --------------------------------------------------------------------


@dataclass(frozen=True)
class BootSetup:
    """What the boot loader is made of, decided before the copy."""

    mode: BootMode
    uuid: str  # the root file system's
    fs_type: str
    # GRUB's module folder, for the core image and /boot/grub/<target> alike;
    # None: no boot loader (a UEFI image still gets a formatted system partition).
    modules: Path | None


def prepare_boot(
    volume: Path, mode: BootMode, *, uuid: str, fs_type: str, bootloader: bool = True
) -> BootSetup:
    """Checks that everything the boot loader needs is here (GRUB, the tools,
    a kernel in the volume); raises BootError or ToolNotFound naming what to
    install otherwise."""
    needed = [("mkfs.vfat", "dosfstools")] if mode is BootMode.UEFI else []
    if not bootloader:
        modules = None
    else:
        grub.fs_module(fs_type)
        find_kernel(volume)  # first: the volume's problem, whatever this machine has
        modules = _module_folder(volume, mode.platform)
        needed.append(("grub-mkimage", mode.platform.packages))
        if mode is BootMode.UEFI:
            needed += [("mmd", "mtools"), ("mcopy", "mtools")]
    for tool, package in needed:
        tools.which(tool, package)
    return BootSetup(mode, uuid, fs_type, modules)


def _module_folder(volume: Path, platform: GrubPlatform) -> Path:
    """The volume's own GRUB modules when it has them (they match its GRUB),
    else this machine's."""
    for folder in (volume / "usr/lib/grub" / platform.target, platform.host_modules()):
        if all((folder / name).is_file() for name in platform.required):
            return folder
    raise BootError(
        f"no GRUB 2 for {platform.target} in the volume or on this machine",
        hint=f"apt-get install {platform.packages}, or use {{off}}",
        param="bootloader",
    )


_KERNEL = re.compile(r"vmlinuz-(.+)")
_INITRDS = ("initrd.img-{}", "initramfs-{}.img", "initrd-{}.img", "initrd-{}", "initramfs-{}")


def find_kernel(root: Path) -> KernelFiles:
    """The newest ``/boot/vmlinuz-VERSION`` of a tree and its initrd, if any.
    Only regular files count: a symbolic link could point out of the tree."""
    boot = root / "boot"
    names = os.listdir(boot) if boot.is_dir() else []  # noqa: PTH208 - names only
    regular = [name for name in names if _is_regular(boot / name)]
    return choose_kernel(regular, str(root))


def choose_kernel(regular_files: Iterable[str], where: str) -> KernelFiles:
    """The newest ``vmlinuz-VERSION`` among the names of the regular files in a
    ``/boot`` folder, and its initrd, if any (``where`` names the tree or
    image in the error). Shared by :func:`find_kernel` and readers of ``/boot``
    inside an image file (``to-ebs --make-bootable``)."""
    names = set(regular_files)
    found = [match.group(1) for match in map(_KERNEL.fullmatch, names) if match]
    if not found:
        raise BootError(
            f"{where} has no kernel (boot/vmlinuz-VERSION) for the boot loader to start",
            hint="install a kernel in the volume, or use {off}",
            param="bootloader",
        )
    version = max(found, key=_version_key)
    initrd = next(
        (f"/boot/{n.format(version)}" for n in _INITRDS if n.format(version) in names), None
    )
    return KernelFiles(version, f"/boot/vmlinuz-{version}", initrd)


def _version_key(version: str) -> list[tuple[int, int | str]]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", version) if t]


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


# --- into the image's tree ------------------------------------------------------------


def stage_boot_files(
    root: Path, setup: BootSetup, table: DiskTable, *, kernel: KernelFiles | None = None
) -> list[str]:
    """Writes ``boot/grub/grub.cfg`` and GRUB's modules into the tree at ``root``
    (the staged or mounted image). Returns what it created, relative to
    ``root``, folders before their contents, for the caller to give to root.
    The kernel to boot is the newest in ``root``'s ``/boot`` unless ``kernel``
    names it (GRUB's own partition, which holds no kernel).

    Nothing is written through an existing path: in a staging tree of hard
    links that would change the volume itself."""
    if setup.modules is None:
        return []
    kernel = kernel or find_kernel(root)
    root_device = f"UUID={setup.uuid}" if kernel.initrd else f"PARTUUID={table.root_partuuid()}"
    created: list[str] = []
    folder = "boot/grub"
    for rel in ("boot", folder):
        if (root / rel).is_symlink():
            # Its target would be resolved on this machine, not in the image.
            raise BootError(f"/{rel} in the volume is a symbolic link; GRUB needs a folder")
        if not (root / rel).is_dir():
            (root / rel).mkdir(mode=0o755)
            created.append(rel)
    target = f"{folder}/{setup.mode.platform.target}"
    if os.path.lexists(root / target):
        _remove(root / target)  # another GRUB's modules would not fit our core image
    (root / target).mkdir(mode=0o755)
    created.append(target)
    for source in grub.module_files(setup.modules):
        write_new(root / target / source.name, source.read_bytes())
        created.append(f"{target}/{source.name}")
    config = root / folder / "grub.cfg"
    if os.path.lexists(config):
        config.replace(root / folder / "grub.cfg.old")
    text = grub.grub_config(
        uuid=setup.uuid, fs_type=setup.fs_type, kernel=kernel, root_device=root_device
    )
    write_new(config, text.encode())
    created.append(f"{folder}/grub.cfg")
    return created


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# --- into the image file ----------------------------------------------------------------


def finish_disk(image: Path, setup: BootSetup, table: DiskTable) -> None:
    """Writes the boot code into the finished image file (no loop device).
    Without a boot loader only a UEFI image's system partition is formatted."""
    if setup.mode is BootMode.UEFI:
        esp = table.of_type(ESP_TYPE)
        if esp is None:
            raise BootError("the image has no EFI system partition")
        grub.install_efi(
            image,
            esp_sector=esp.start,
            esp_sectors=esp.sectors,
            uuid=setup.uuid,
            fs_type=setup.fs_type,
            modules=setup.modules,
        )
        return
    if setup.modules is None:
        return
    if table.label == "gpt":
        bios_boot = table.of_type(BIOS_BOOT_TYPE)
        if bios_boot is None:
            raise BootError("the GPT image has no BIOS boot partition for GRUB's core image")
        start, room = bios_boot.start, bios_boot.sectors
    else:
        start, room = 1, min(p.start for p in table.partitions) - 1
    grub.install_bios(
        image,
        core_sector=start,
        room_sectors=room,
        uuid=setup.uuid,
        fs_type=setup.fs_type,
        modules=setup.modules,
    )
