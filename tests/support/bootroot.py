"""The boot tests' root tree: a static busybox, an init that reports, a kernel in /boot.

``/sbin/init`` prints ``@@ key value`` lines on the console: the kernel
release, its command line, the firmware (``/sys/firmware/efi``), the image's
own ``/dev/console`` (before devtmpfs hides it), the root device and mount
options, the modes/owners/link counts of the files in ``/srv/check``, the
device fstab's root entry resolves to, and whether ``/`` remounts
read-write; then it powers the machine off. What the files must look like is
read from this tree on the host, independently of the image under test.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

REPORT = "@@ "
INIT = """#!/bin/sh
# /sbin/init of amibundle's boot test: say what the booted system sees, power off.
export PATH=/bin
say() { echo "@@ $*"; }
root_mount() { awk '$2 == "/" && $1 != "rootfs" { print $3, $4 }' /proc/mounts; }
mount -t proc proc /proc
# Kernel messages would land in the middle of report lines ("@@ begin[ 2.34] ...").
echo 1 > /proc/sys/kernel/printk
mount -t sysfs sysfs /sys
say begin
say kernel "$(uname -r)"
say cmdline "$(cat /proc/cmdline)"
if [ -d /sys/firmware/efi ]; then say firmware uefi; else say firmware bios; fi
say console "$(stat -c '%F %t:%T %a %u:%g' /dev/console)"
numbers=$(awk '$5 == "/" { print $3 }' /proc/self/mountinfo)
say rootdev "$(sed -n 's/^DEVNAME=//p' "/sys/dev/block/$numbers/uevent")"
say rootmount "$(root_mount)"
for file in /srv/check/*; do say file "$(stat -c '%n %f %u:%g %h' "$file")"; done
mount -t devtmpfs devtmpfs /dev
fsroot=$(awk '$2 == "/" { print $1 }' /etc/fstab)
say fstab "$fsroot $(findfs "$fsroot")"
mount -o remount,rw / && say remount "$(root_mount)"
say end
sync
poweroff -f
"""
APPLETS = ("sh", "mount", "cat", "uname", "stat", "awk", "sed", "findfs", "poweroff", "sync")
OWNER = (1234, 5678)
# bundle-vol's /dev/console as busybox stat shows it: character device 5:1, 0600, root:tty.
CONSOLE = "character special file 5:1 600 0:5"


@dataclass(frozen=True)
class RootTree:
    root: Path
    kernel_version: str

    def expected_files(self) -> dict[str, str]:
        """``stat -c '%f %u:%g %h'`` of each file in /srv/check, from the host's view."""
        found = {}
        for path in sorted((self.root / "srv/check").iterdir()):
            st = os.lstat(path)
            found[f"/srv/check/{path.name}"] = (
                f"{st.st_mode:x} {st.st_uid}:{st.st_gid} {st.st_nlink}"
            )
        return found


def is_static_elf(path: Path) -> bool:
    """True for an ELF64 executable without a program interpreter (PT_INTERP)."""
    with open(path, "rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        size, count = struct.unpack_from("<HH", header, 0x36)
        handle.seek(phoff)
        table = handle.read(size * count)
    kinds = [struct.unpack_from("<I", table, i * size)[0] for i in range(count)]
    return 3 not in kinds


def build_root(base: Path, busybox: Path, kernel: Path) -> RootTree:
    """The tree bundle-vol copies (the fstab is bundle-vol's own modern one)."""
    root = base / "rootfs"
    for folder in ("bin", "sbin", "etc", "boot", "srv/check"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    init = root / "sbin/init"
    init.write_text(INIT)
    init.chmod(0o755)
    (root / "etc/hostname").write_text("amibundle-boot\n")
    version = kernel.name.removeprefix("vmlinuz-")
    shutil.copyfile(kernel, root / "boot" / kernel.name)
    (root / "boot" / kernel.name).chmod(0o644)
    check = root / "srv/check"
    (check / "setuid").write_bytes(b"setuid\n")
    (check / "setuid").chmod(0o4755)
    (check / "owned").write_bytes(b"someone else's\n")
    (check / "owned").chmod(0o644)
    os.chown(check / "owned", *OWNER)
    (check / "linked-a").write_bytes(b"two names\n")
    os.link(check / "linked-a", check / "linked-b")
    (check / "sticky").mkdir()
    (check / "sticky").chmod(0o1777)
    (check / "symlink").symlink_to("owned")
    for path in (root, *root.rglob("*")):
        if not path.is_symlink() and path.is_dir():
            path.chmod(0o1777 if path.name == "sticky" else 0o755)
    return RootTree(root, version)
