"""The loop builder: root and a working loop device, like the classic tool.

Sparse file, optional partition table, ``losetup``, mkfs (ext2/3/4, xfs,
btrfs), mount at a private temporary folder, copy with
:mod:`amibundle.volume.copier`, fstab, ``/boot/grub``, script, unmount,
detach. No partition nodes are needed (kernels that do not scan loop
partitions get a second loop device over partition 1): the boot code is
written into the finished file (:func:`amibundle.volume.boot.finish_disk`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from amibundle import tools
from amibundle.errors import ToolError, VolumeError
from amibundle.volume.copier import CopyResult, populate
from amibundle.volume.fill import (
    add_special_files,
    add_special_folders,
    install_boot_files,
    install_fstab,
    install_grub_config,
    run_script,
)
from amibundle.volume.plan import (
    EXT_TYPES,
    BuildJob,
    ImageSpec,
    Layout,
    MiB,
    PartitionTable,
    mke2fs_options,
)
from amibundle.volume.rules import TreeTotals, walk

__all__ = ["build_with_loop"]

log = logging.getLogger("amibundle.volume")


def build_with_loop(job: BuildJob, cleanup: contextlib.ExitStack) -> CopyResult:
    volume, spec, layout, totals, notify = job.volume, job.spec, job.layout, job.totals, job.notify
    fs_device = _attach(job.partial, layout, cleanup)
    _mkfs(fs_device, spec, layout, totals)
    mount_point = Path(tempfile.mkdtemp(prefix="amibundle-mnt-"))
    cleanup.callback(_remove_mount_point, mount_point)
    tools.run(["mount", "-t", spec.fs_type, fs_device, mount_point])
    cleanup.callback(_unmount, mount_point)
    _check_free_space(mount_point, totals, spec)
    notify(f"Copying {volume} into the image file (mounted at {mount_point}) ...")
    add_special_folders(mount_point)
    copied = populate(
        volume, walk(volume, job.rules), mount_point, link_to_volume=False, privileged=True
    )
    add_special_files(mount_point, copied, True)
    install_fstab(mount_point, spec, copied, True, notify)
    install_grub_config(mount_point, spec, layout, copied, True)
    install_boot_files(mount_point, spec, job.table, copied, True)
    run_script(spec, mount_point, notify)
    root = os.lstat(volume)
    os.chown(mount_point, root.st_uid, root.st_gid)
    mount_point.chmod(stat.S_IMODE(root.st_mode))
    os.utime(mount_point, ns=(root.st_atime_ns, root.st_mtime_ns))
    # Unmount and detach now (not only in cleanup) so the image is complete and quiet.
    tools.run(["sync", "-f", mount_point])
    return copied


def _attach(partial: Path, layout: Layout, cleanup: contextlib.ExitStack) -> str:
    """Binds the image to a loop device; returns the file system's device."""
    if layout.partition is PartitionTable.NONE:
        disk = tools.run(["losetup", "--find", "--show", partial]).stdout.strip()
        cleanup.callback(_detach, disk)
        return disk
    disk = tools.run(["losetup", "--find", "--show", "--partscan", partial]).stdout.strip()
    cleanup.callback(_detach, disk)
    node = f"{disk}p1"
    in_sysfs = Path("/sys/block") / Path(disk).name / f"{Path(disk).name}p1"
    deadline = time.monotonic() + 2
    while not Path(node).exists() and time.monotonic() < deadline:
        if not in_sysfs.exists() and time.monotonic() > deadline - 1:
            break  # the kernel did not scan partitions: no node will come
        time.sleep(0.05)
    if Path(node).exists():
        return node
    # No partition nodes: a second loop device over partition 1 is enough to copy.
    part = tools.run(
        [
            "losetup",
            "--find",
            "--show",
            f"--offset={layout.fs_offset}",
            f"--sizelimit={layout.fs_size}",
            partial,
        ]
    ).stdout.strip()
    cleanup.callback(_detach, part)
    return part


def _detach(device: str) -> None:
    for attempt in range(20):
        try:
            tools.run(["losetup", "--detach", device])
            return
        except ToolError:
            if attempt == 19:
                log.warning("could not detach %s; detach it with: losetup -d %s", device, device)
                return
            time.sleep(0.1)


def _unmount(mount_point: Path) -> None:
    for attempt in range(20):
        try:
            tools.run(["umount", mount_point])
            return
        except ToolError:
            if attempt == 19:
                tools.run(["umount", "--lazy", mount_point], check=False)
                return
            time.sleep(0.1)


def _remove_mount_point(mount_point: Path) -> None:
    with contextlib.suppress(OSError):
        mount_point.rmdir()


def _mkfs(device: str, spec: ImageSpec, layout: Layout, totals: TreeTotals) -> None:
    if spec.fs_type in EXT_TYPES:
        tools.run(["mke2fs", *mke2fs_options(spec, layout, totals), device])
    elif spec.fs_type == "xfs":
        label = ["-L", spec.label[:12]] if spec.label else []
        tools.run(["mkfs.xfs", "-f", "-q", *label, "-m", f"uuid={spec.uuid}", device])
    else:
        label = ["-L", spec.label] if spec.label else []
        tools.run(["mkfs.btrfs", "-f", "-q", *label, "-U", spec.uuid, device])


def _check_free_space(mount_point: Path, totals: TreeTotals, spec: ImageSpec) -> None:
    fs = os.statvfs(mount_point)
    free = fs.f_bavail * fs.f_frsize
    need = totals.needed_bytes + totals.needed_bytes // 50
    if free < need:
        raise VolumeError(
            f"the data does not fit: it needs about {need / MiB:.0f} MiB, the {spec.fs_type} "
            f"file system has {free / MiB:.0f} MiB free ({(need - free) / MiB:.0f} MiB short)",
            hint="use a larger {param}, or size the image automatically",
            param="size_mib",
        )
    if fs.f_favail and fs.f_favail < totals.inodes:
        raise VolumeError(
            f"the data needs {totals.inodes} inodes, the file system has {fs.f_favail}",
            hint="use a larger {param}, or size the image automatically",
            param="size_mib",
        )
