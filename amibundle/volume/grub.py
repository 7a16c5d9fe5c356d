"""GRUB 2 written straight into an image file: no loop device, no mount, no grub-install.

``grub-install`` needs a block device the kernel has partitions for; inside
containers and on kernels that do not scan loop partitions there is none.
What it writes is simple enough to do on the file itself:

BIOS (``i386-pc``)
    ``grub-mkimage`` makes the core image (with an early configuration that
    finds the root file system by UUID); it goes into the gap after the MBR
    (MBR tables) or into the BIOS boot partition (GPT), and the first 440
    bytes of ``boot.img``, told where the core image starts, become the
    MBR's boot code. The disk signature and partition table stay as they are.
UEFI (``x86_64-efi``)
    ``grub-mkimage`` makes ``BOOTX64.EFI`` (the removable-media path, which
    firmware boots without an NVRAM entry), and ``mkfs.vfat`` plus mtools put
    it on a FAT file system in the EFI system partition, at its offset.

Both core images load the rest of GRUB (modules, ``grub.cfg``) from
``/boot/grub`` of the root file system, so the modules copied there must come
from the same folder as the core image (:func:`module_files`).
"""

from __future__ import annotations

import logging
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amibundle import tools
from amibundle.errors import BootError

__all__ = [
    "BIOS",
    "EFI",
    "SECTOR",
    "GrubPlatform",
    "KernelFiles",
    "fs_module",
    "grub_config",
    "install_bios",
    "install_efi",
    "module_files",
    "point_at_core",
]

log = logging.getLogger("amibundle.volume.grub")

SECTOR = 512
# Offsets in GRUB's i386-pc boot.img and core image (grub/i386/pc/boot.h).
_KERNEL_SECTOR = 0x5C  # u64: where boot.img finds the core image's first sector
_DRIVE_CHECK = 0x66  # a jump grub-setup replaces with two NOPs on hard disks
_BOOT_CODE = 440  # boot code ends where the disk signature starts
_BLOCKLIST_START = SECTOR - 12  # diskboot's first blocklist entry: u64 start, u16 len, u16 seg


@dataclass(frozen=True)
class GrubPlatform:
    """One GRUB target: its module folder name and the Debian packages that bring it."""

    target: str  # i386-pc or x86_64-efi
    packages: str  # what to apt-get install when it is missing
    required: tuple[str, ...]  # files its module folder must hold

    def host_modules(self) -> Path:
        return Path("/usr/lib/grub") / self.target


BIOS = GrubPlatform("i386-pc", "grub-pc-bin grub2-common", ("boot.img", "kernel.img", "normal.mod"))
EFI = GrubPlatform("x86_64-efi", "grub-efi-amd64-bin grub2-common", ("kernel.img", "normal.mod"))

# The file system driver GRUB needs for the root file system.
_FS_MODULE = {"ext2": "ext2", "ext3": "ext2", "ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs"}


@dataclass(frozen=True)
class KernelFiles:
    """The kernel (and initrd) to boot, as paths inside the image (``/boot/...``)."""

    version: str
    kernel: str
    initrd: str | None


# --- configuration --------------------------------------------------------------------


def grub_config(*, uuid: str, fs_type: str, kernel: KernelFiles, root_device: str) -> str:
    """``/boot/grub/grub.cfg``: serial and screen consoles, the root file system
    found by UUID, one entry that boots ``kernel`` with ``root=root_device``."""
    initrd = f"\tinitrd {kernel.initrd}\n" if kernel.initrd else ""
    return (
        "# /boot/grub/grub.cfg written by amibundle bundle-vol\n"
        "set default=0\n"
        "set timeout=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        'if [ "$grub_platform" = "efi" ]; then insmod all_video; fi\n'
        "insmod part_msdos\n"
        "insmod part_gpt\n"
        f"insmod {fs_module(fs_type)}\n"
        f"search --no-floppy --fs-uuid --set=root {uuid}\n"
        f"menuentry 'Linux {kernel.version}' {{\n"
        f"\tlinux {kernel.kernel} root={root_device} ro console=tty0 console=ttyS0,115200n8\n"
        f"{initrd}"
        "}\n"
    )


def _early_config(uuid: str) -> str:
    # Baked into the core image: where the rest of GRUB is, whatever the disk's number.
    return f"search --no-floppy --fs-uuid --set=root {uuid}\nset prefix=($root)/boot/grub\n"


def fs_module(fs_type: str) -> str:
    """GRUB's driver for ``fs_type``; BootError when GRUB has none."""
    try:
        return _FS_MODULE[fs_type]
    except KeyError:
        raise BootError(f"GRUB cannot boot from a {fs_type} file system here") from None


def module_files(modules: Path) -> Iterator[Path]:
    """What goes into the image's ``/boot/grub/<target>``: modules and their lists."""
    for path in sorted(modules.iterdir()):
        if path.suffix in (".mod", ".lst") and path.is_file():
            yield path


# --- core images ----------------------------------------------------------------------


def _core_image(
    platform: GrubPlatform, modules: Path, uuid: str, fs_type: str, work: Path
) -> bytes:
    early = work / "early.cfg"
    early.write_text(_early_config(uuid))
    output = work / "core.img"
    disk_modules = ["biosdisk"] if platform is BIOS else []
    tools.run(
        [
            "grub-mkimage",
            "--format",
            platform.target,
            "--directory",
            modules,
            "--config",
            early,
            "--prefix",
            "/boot/grub",
            "--output",
            output,
            *disk_modules,
            "part_msdos",
            "part_gpt",
            fs_module(fs_type),
            "search",
            "search_fs_uuid",
            "normal",
        ]
    )
    return output.read_bytes()


def install_bios(
    image: Path, *, core_sector: int, room_sectors: int, uuid: str, fs_type: str, modules: Path
) -> int:
    """Writes GRUB for BIOS into ``image``: the core image at ``core_sector``
    (``room_sectors`` long: the MBR gap or the BIOS boot partition) and
    boot.img's code into the MBR. Returns the core image's size in bytes."""
    with tempfile.TemporaryDirectory(prefix="amibundle-grub-") as work:
        core = _core_image(BIOS, modules, uuid, fs_type, Path(work))
    if len(core) > room_sectors * SECTOR:
        raise BootError(
            f"GRUB's core image ({len(core)} bytes) does not fit in the "
            f"{room_sectors * SECTOR} bytes the partition table leaves for it"
        )
    boot = (modules / "boot.img").read_bytes()
    if len(boot) != SECTOR:
        raise BootError(f"{modules / 'boot.img'} is not a {SECTOR}-byte boot sector")
    boot_code, core = point_at_core(boot, core, core_sector)
    with open(image, "r+b") as disk:
        disk.seek(core_sector * SECTOR)
        disk.write(core)
        disk.seek(0)
        disk.write(boot_code)
    log.debug("GRUB core image: %d bytes at sector %d", len(core), core_sector)
    return len(core)


def point_at_core(boot: bytes, core: bytes, core_sector: int) -> tuple[bytes, bytes]:
    """boot.img's code (the MBR's first 440 bytes) and the core image, told that
    the core image starts at ``core_sector``, as grub-setup does for a hard disk."""
    code = bytearray(boot[:_BOOT_CODE])
    struct.pack_into("<Q", code, _KERNEL_SECTOR, core_sector)
    code[_DRIVE_CHECK : _DRIVE_CHECK + 2] = b"\x90\x90"
    # diskboot.img (the core image's first sector) loads the rest from the next sector on.
    patched = bytearray(core)
    struct.pack_into("<Q", patched, _BLOCKLIST_START, core_sector + 1)
    return bytes(code), bytes(patched)


def install_efi(
    image: Path,
    *,
    esp_sector: int,
    esp_sectors: int,
    uuid: str,
    fs_type: str,
    modules: Path | None,
) -> None:
    """Formats the EFI system partition (FAT, at its offset in ``image``) and,
    with ``modules``, puts GRUB there as ``/EFI/BOOT/BOOTX64.EFI``."""
    # FAT16 said outright: left to choose, mkfs.fat 4.2 goes by the size of the whole
    # image file, picks FAT32 for a large one, and then refuses a 32 MiB partition.
    tools.run(
        ["mkfs.vfat", "-F", "16", "--offset", str(esp_sector), "-n", "EFI", image,
         str(esp_sectors // 2)]
    )  # fmt: skip
    if modules is None:
        return
    # mtools addresses a file system inside a file as NAME@@OFFSET; a relative
    # name keeps any "@@" of the folder's path out of it.
    target = f"{image.name}@@{esp_sector * SECTOR}"
    env = {"MTOOLS_SKIP_CHECK": "1"}
    with tempfile.TemporaryDirectory(prefix="amibundle-grub-") as work:
        core = Path(work) / "BOOTX64.EFI"
        core.write_bytes(_core_image(EFI, modules, uuid, fs_type, Path(work)))
        tools.run(["mmd", "-i", target, "::/EFI", "::/EFI/BOOT"], cwd=image.parent, env=env)
        tools.run(
            ["mcopy", "-i", target, core, "::/EFI/BOOT/BOOTX64.EFI"], cwd=image.parent, env=env
        )
