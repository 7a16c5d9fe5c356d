"""What goes into the image besides the volume's own files (``classic-cli.md`` §3.6-3.8).

Empty ``mnt proc sys dev`` with the classic nodes in ``dev``, the fstab asked
for (the volume's own, ``--fstab FILE`` or a built-in one, the old one kept
as ``etc/fstab.old``), the legacy GRUB menu of ``--grub-config``, GRUB 2's
``/boot/grub`` for a partitioned image (:mod:`amibundle.volume.boot`), and
the ``-S`` script. Shared by both builders: as root, owners are set directly;
unprivileged, they are returned as fixups for debugfs. New files never write
through an existing path (a staged hard link would carry the change into the
volume): the old entry is removed or renamed first.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from pathlib import Path

from amibundle import tools
from amibundle.errors import ToolError, VolumeError
from amibundle.files import write_new
from amibundle.volume.boot import DiskTable, stage_boot_files
from amibundle.volume.copier import CopyResult, Fixup
from amibundle.volume.plan import FstabVariant, ImageSpec, Layout, Notify, PartitionTable

__all__ = [
    "add_special_files",
    "add_special_folders",
    "fstab_text",
    "install_boot_files",
    "install_fstab",
    "install_grub_config",
    "own_created",
    "replace_file",
    "run_script",
]

log = logging.getLogger("amibundle.volume.fill")

_PACKAGE = "ec2-ami-tools-1.5-3"  # what the classic fstab says supplied it
# (name, type, major, minor, mode, gid) of the classic /dev nodes.
_DEV_NODES = (
    ("null", stat.S_IFCHR, 1, 3, 0o666, 0),
    ("zero", stat.S_IFCHR, 1, 5, 0o666, 0),
    ("tty", stat.S_IFCHR, 5, 0, 0o666, 5),
    ("console", stat.S_IFCHR, 5, 1, 0o600, 5),
)
_EMPTY_FOLDERS = ("mnt", "proc", "sys", "dev")

# --- fstab ----------------------------------------------------------------------------


def fstab_text(variant: FstabVariant, *, fs_type: str, label: str | None, uuid: str) -> str:
    """The classic built-in fstabs (``default``, ``legacy``, exact), or ``modern``."""
    if variant is FstabVariant.DEFAULT:
        return (
            f"# Default /etc/fstab\n# Supplied by: {_PACKAGE}\n"
            "/dev/sda1 /     ext3    defaults 1 1\n"
            "/dev/sdb  /mnt  ext3    defaults 0 0\n"
            "none      /dev/pts devpts  gid=5,mode=620 0 0\n"
            "none      /proc proc    defaults 0 0\n"
            "none      /sys  sysfs   defaults 0 0\n"
        )
    if variant is FstabVariant.LEGACY:
        return (
            f"# Legacy /etc/fstab\n# Supplied by: {_PACKAGE}\n"
            "/dev/sda1 /     ext3    defaults 1 1\n"
            "/dev/sda2 /mnt  ext3    defaults 0 0\n"
            "/dev/sda3 swap  swap    defaults 0 0\n"
            "none      /proc proc    defaults 0 0\n"
            "none      /sys  sysfs   defaults 0 0\n"
        )
    root = f"LABEL={label}" if label else f"UUID={uuid}"
    return (
        "# /etc/fstab written by amibundle bundle-vol\n"
        f"{root} / {fs_type} defaults 0 1\n"
        "none /dev/pts devpts gid=5,mode=620 0 0\n"
        "none /proc proc defaults 0 0\n"
        "none /sys sysfs defaults 0 0\n"
    )


def add_special_folders(root: Path) -> None:
    # The classic makes these before copying; the copy then gives them the volume's metadata.
    for name in _EMPTY_FOLDERS:
        (root / name).mkdir(mode=0o755, exist_ok=True)


# --- shared finishing steps -----------------------------------------------------------


def _own(
    root: Path,
    rel: str,
    copied: CopyResult,
    privileged: bool,
    *,
    uid: int = 0,
    gid: int = 0,
    mode: int | None = None,
    device: tuple[int, int] | None = None,
) -> None:
    """Gives something we created its owner: directly as root, else through a fixup."""
    path = root / rel
    st = os.lstat(path) if device is None else None
    if privileged:
        os.chown(path, uid, gid, follow_symlinks=False)
        if mode is not None and not stat.S_ISLNK(mode):
            path.chmod(stat.S_IMODE(mode))
        return
    full_mode = mode if mode is not None else (st.st_mode if st is not None else None)
    copied.fixups.append(Fixup(rel, mode=full_mode, uid=uid, gid=gid, device=device))


def own_created(root: Path, rels: list[str], copied: CopyResult, privileged: bool) -> None:
    """Gives what a finishing step created (``rels``, relative to ``root``) to root."""
    for rel in rels:
        _own(root, rel, copied, privileged)


def add_special_files(root: Path, copied: CopyResult, privileged: bool) -> None:
    """Empty mnt, proc, sys, dev and the classic nodes in dev (the volume's own
    dev is never copied)."""
    for name in _EMPTY_FOLDERS:
        path = root / name
        if not path.is_dir():
            path.mkdir(mode=0o755)
            _own(root, name, copied, privileged, mode=stat.S_IFDIR | 0o755)
    for name, kind, major, minor, mode, gid in _DEV_NODES:
        rel = f"dev/{name}"
        if os.path.lexists(root / rel):
            continue
        if privileged:
            os.mknod(root / rel, kind | mode, os.makedev(major, minor))
            _own(root, rel, copied, True, gid=gid, mode=kind | mode)
        else:
            copied.fixups.append(
                Fixup(
                    rel,
                    mode=kind | mode,
                    uid=0,
                    gid=gid,
                    device=(major, minor),
                    mtime=int(time.time()),
                    atime=int(time.time()),
                )
            )
    if not os.path.lexists(root / "dev/X0R"):
        (root / "dev/X0R").symlink_to("null")
        _own(root, "dev/X0R", copied, privileged, mode=stat.S_IFLNK | 0o777)


def replace_file(
    root: Path,
    rel: str,
    data: bytes,
    copied: CopyResult,
    privileged: bool,
    *,
    keep_old_as: str | None = None,
) -> None:
    """Writes a new file at ``rel``; never writes through a staged hard link
    (that would change the volume)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_old_as and os.path.lexists(path):
        path.replace(root / keep_old_as)
    elif os.path.lexists(path):
        path.unlink()
    write_new(path, data)
    _own(root, rel, copied, privileged, mode=stat.S_IFREG | 0o644)


def install_fstab(
    root: Path, spec: ImageSpec, copied: CopyResult, privileged: bool, notify: Notify
) -> None:
    if spec.fstab is not None:
        data = spec.fstab.read_bytes()
    elif spec.generate_fstab is not None:
        data = fstab_text(
            spec.generate_fstab, fs_type=spec.fs_type, label=spec.label, uuid=spec.uuid
        ).encode()
    else:
        return  # the volume's own, copied like any file
    replace_file(root, "etc/fstab", data, copied, privileged, keep_old_as="etc/fstab.old")
    notify("/etc/fstab in the image:")
    for line in data.decode(errors="replace").splitlines():
        notify(f"  {line}")


def install_grub_config(
    root: Path, spec: ImageSpec, layout: Layout, copied: CopyResult, privileged: bool
) -> None:
    """``--grub-config``: the legacy GRUB menu (as PV-GRUB reads it), for every
    image (the classic ignored it for unpartitioned ones)."""
    if spec.grub_config is None:
        return
    text = spec.grub_config.read_text(errors="surrogateescape")
    if layout.partition is not PartitionTable.NONE:
        # The root file system is on the first partition now.
        text = re.sub(r"\(hd0\)", "(hd0,0)", text)
    replace_file(
        root, "boot/grub/menu.lst", text.encode(errors="surrogateescape"), copied, privileged
    )
    link = root / "boot/grub/grub.conf"
    if os.path.lexists(link):
        link.unlink()
    link.symlink_to("menu.lst")
    _own(root, "boot/grub/grub.conf", copied, privileged, mode=stat.S_IFLNK | 0o777)


def install_boot_files(
    root: Path, spec: ImageSpec, table: DiskTable | None, copied: CopyResult, privileged: bool
) -> None:
    """GRUB 2's ``/boot/grub`` (grub.cfg and modules) for a partitioned image
    with a boot loader; its boot code goes into the finished file later."""
    if spec.boot is not None and table is not None:
        own_created(root, stage_boot_files(root, spec.boot, table), copied, privileged)


def run_script(spec: ImageSpec, root: Path, notify: Notify) -> None:
    if spec.script is None:
        return
    notify(f"Running {spec.script} {root} ...")
    try:
        done = tools.run([str(spec.script.resolve()), str(root)])
    except ToolError as err:
        hint = (
            "a script needs execute permission and a '#!' line" if err.returncode == 126 else None
        )
        raise VolumeError(f"the script {spec.script} failed: {err}", hint=hint) from None
    if done.stdout.strip():
        log.debug("script output: %s", done.stdout.rstrip())
