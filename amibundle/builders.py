"""The two builders of bundle-vol's image, and :func:`build_image` which runs one.

``loop`` (root and a working loop device, like the classic tool)
    sparse file, optional partition table, ``losetup``, mkfs (ext2/3/4, xfs,
    btrfs), mount at a private temporary folder, copy with
    :mod:`amibundle.treecopy`, fstab, script, boot loader, unmount, detach.
``rootless`` (no root, no loop device, no mount; what CI containers can do)
    a staging view of the volume made of hard links
    (:func:`amibundle.treecopy.populate`), ``mke2fs -d`` to build the file
    system straight into the image file (at the partition's offset for
    partitioned images), then ``debugfs -w`` for what an unprivileged copy
    cannot carry: device nodes, owners of other users, setgid bits,
    privileged attributes, and the root folder's own metadata.

Every resource (loop device, mount, staging tree, partial image) is released
in reverse order on any failure or Ctrl-C; the image appears under its final
name only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from amibundle import tools
from amibundle.errors import OutputExistsError
from amibundle.files import publish
from amibundle.imagebuild import (
    BLOCK,
    EXT_TYPES,
    BuildResult,
    ImageSpec,
    Layout,
    MiB,
    Notify,
    VolumeError,
    fs_name,
    mke2fs_options,
    prepare_image,
)
from amibundle.imagefill import (
    add_special_files,
    add_special_folders,
    install_fstab,
    install_grub_config,
    run_script,
)
from amibundle.treecopy import CopyResult, Fixup, populate
from amibundle.volume import CopyRules, TreeTotals, measure, walk

__all__ = ["build_image"]

log = logging.getLogger("amibundle.builders")

# --- building ---------------------------------------------------------------------------


def build_image(
    volume: Path,
    rules: CopyRules,
    spec: ImageSpec,
    *,
    builder: str,
    notify: Notify,
) -> BuildResult:
    """Builds ``spec.path`` from ``volume`` with ``builder``; returns what was made."""
    started = time.monotonic()
    if spec.path.exists() and not spec.force:
        raise OutputExistsError(f"the image file {spec.path} already exists; use --force")
    totals = measure(walk(volume, rules))
    notify(
        f"{totals.entries} entries to copy, {totals.data_bytes / MiB:.1f} MiB of data "
        f"({totals.hard_links} hard links)"
    )
    with contextlib.ExitStack() as output:
        partial = _partial_image(spec, output)
        layout = prepare_image(partial, spec, totals, notify)
        # Loop devices, mounts and the staging tree go as soon as the image is
        # complete, and in reverse order after any failure or Ctrl-C.
        with contextlib.ExitStack() as resources:
            if builder == "loop":
                copied = _build_with_loop(
                    volume, rules, spec, layout, partial, totals, resources, notify
                )
            else:
                copied = _build_rootless(
                    volume, rules, spec, layout, partial, totals, resources, notify
                )
        publish(partial, spec.path, overwrite=spec.force)
        output.pop_all()  # published: the partial image is the result now
    return BuildResult(
        image_path=spec.path,
        builder=builder,
        fs_type=spec.fs_type,
        label=spec.label,
        uuid=spec.uuid,
        partition=layout.partition,
        image_size=layout.image_size,
        entries=copied.entries,
        data_bytes=totals.data_bytes,
        fixups=len(copied.fixups),
        seconds=time.monotonic() - started,
    )


def _partial_image(spec: ImageSpec, cleanup: contextlib.ExitStack) -> Path:
    fd, name = tempfile.mkstemp(
        prefix=f".{spec.path.name}.", suffix=".partial", dir=spec.path.parent
    )
    os.close(fd)
    partial = Path(name)

    def discard() -> None:
        if spec.keep_partial:
            log.warning("keeping the partial image %s (--keep-partial)", partial)
        else:
            partial.unlink(missing_ok=True)

    cleanup.callback(discard)
    return partial


# --- rootless ---------------------------------------------------------------------------------


def _build_rootless(
    volume: Path,
    rules: CopyRules,
    spec: ImageSpec,
    layout: Layout,
    partial: Path,
    totals: TreeTotals,
    cleanup: contextlib.ExitStack,
    notify: Notify,
) -> CopyResult:
    privileged = os.geteuid() == 0
    staging = Path(
        tempfile.mkdtemp(prefix=f".{spec.path.name}.", suffix=".staging", dir=spec.path.parent)
    )
    cleanup.callback(_remove_tree, staging)
    # A script may edit files in place; staged hard links would carry its
    # edits back into the volume, so with a script every file is copied.
    link = spec.script is None
    notify(f"Staging {volume} in {staging} ({'hard links' if link else 'copies'}) ...")
    copied = populate(
        volume, walk(volume, rules), staging, link_to_volume=link, privileged=privileged
    )
    add_special_files(staging, copied, privileged)
    install_fstab(staging, spec, copied, privileged, notify)
    install_grub_config(staging, spec, layout, copied, privileged)
    run_script(spec, staging, notify)
    notify(f"Writing the {spec.fs_type} file system into {spec.path.name} (mke2fs -d) ...")
    extended = f"root_owner=0:0,offset={layout.fs_offset}" if layout.fs_offset else "root_owner=0:0"
    tools.run(
        [
            "mke2fs",
            *mke2fs_options(spec, layout, totals),
            "-E",
            extended,
            "-d",
            staging,
            partial,
            str(layout.fs_size // BLOCK),
        ]
    )
    root = os.lstat(volume)
    fixups = [
        *copied.fixups,
        Fixup(
            "",
            mode=root.st_mode,
            uid=root.st_uid,
            gid=root.st_gid,
            mtime=int(root.st_mtime),
            atime=int(root.st_atime),
        ),
    ]
    _apply_fixups(fs_name(partial, layout), fixups)
    return copied


def _remove_tree(path: Path) -> None:
    def allow_and_retry(func: Callable[..., object], name: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            Path(name).parent.chmod(0o700)
            func(name)

    shutil.rmtree(path, onerror=allow_and_retry)


# --- debugfs ------------------------------------------------------------------------------------


def _debugfs(fs: str, commands: Sequence[str], *, write: bool = False) -> str:
    """Runs debugfs commands; debugfs exits 0 even when a command fails, so its
    stderr is the error report."""
    argv = ["debugfs", *(["-w"] if write else []), "-f", "-", fs]
    done = tools.run(argv, input="".join(f"{c}\n" for c in commands))
    problems = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and not line.startswith("debugfs ")
    ]
    if problems:
        raise VolumeError(f"debugfs could not finish the image: {problems[0].strip()}")
    return done.stdout


_LS_ENTRY = re.compile(r"/(\d+)/([0-7]+)/(\d+)/(\d+)/([^/]*)/(\d*)/\n")
_LS_HEADER = re.compile(r"^debugfs: ls -p <(\d+)>\n", re.MULTILINE)


def _resolve_inodes(fs: str, rels: Sequence[str]) -> dict[str, int]:
    """Inode numbers of paths in the image, found folder by folder with
    ``ls -p <inode>`` (names may hold newlines and quotes; inode numbers do not)."""
    known: dict[str, int] = {"": 2}
    wanted = {rel for rel in rels}
    for rel in list(wanted):
        parts = rel.split("/") if rel else []
        wanted.update("/".join(parts[:i]) for i in range(len(parts)))
    depth = 0
    while True:
        folders = sorted({r.rpartition("/")[0] for r in wanted if r and r.count("/") == depth})
        folders = [f for f in folders if f in known]
        if not folders:
            break
        output = _debugfs(fs, [f"ls -p <{known[f]}>" for f in folders])
        by_inode = {known[f]: f for f in folders}
        sections = _LS_HEADER.split(output)
        for index in range(1, len(sections) - 1, 2):
            folder = by_inode[int(sections[index])]
            for match in _LS_ENTRY.finditer(sections[index + 1]):
                name = match.group(5)
                if name not in (".", "..") and match.group(1) != "0":
                    known[f"{folder}/{name}" if folder else name] = int(match.group(1))
        depth += 1
    missing = [rel for rel in rels if rel not in known]
    if missing:
        raise VolumeError(f"{missing[0]!r} is missing from the new file system")
    return known


def _quote(name: str) -> str:
    if "\n" in name:
        raise VolumeError(f"cannot create {name!r} rootless: its name holds a newline")
    return '"' + name.replace('"', '""') + '"'


def _apply_fixups(fs: str, fixups: Sequence[Fixup]) -> None:
    """Writes what the staged copy could not carry into the image with debugfs."""
    nodes = [f for f in fixups if f.device is not None]
    if nodes:
        parents = _resolve_inodes(fs, [f.rel.rpartition("/")[0] for f in nodes])
        commands = []
        for fix in nodes:
            folder, _, name = fix.rel.rpartition("/")
            kind = "b" if fix.mode is not None and stat.S_ISBLK(fix.mode) else "c"
            assert fix.device is not None
            commands += [
                f"cd <{parents[folder]}>",
                f"mknod {_quote(name)} {kind} {fix.device[0]} {fix.device[1]}",
            ]
        _debugfs(fs, commands, write=True)
    inodes = _resolve_inodes(fs, [f.rel for f in fixups])
    commands = []
    with tempfile.TemporaryDirectory(prefix="amibundle-xattr-") as values:
        for number, fix in enumerate(fixups):
            target = f"<{inodes[fix.rel]}>"
            for field, value in (("uid", fix.uid), ("gid", fix.gid)):
                if value is not None:
                    commands.append(f"set_inode_field {target} {field} {value}")
            if fix.mode is not None:
                commands.append(f"set_inode_field {target} mode 0{fix.mode:o}")
            for field, value in (("mtime", fix.mtime), ("atime", fix.atime)):
                if value is not None:
                    commands.append(f"set_inode_field {target} {field} @{value}")
            for index, (name, data) in enumerate(fix.xattrs):
                value_file = Path(values) / f"{number}-{index}"
                value_file.write_bytes(data)
                commands.append(f"ea_set -f {value_file} {target} {name}")
        if commands:
            _debugfs(fs, commands, write=True)


# --- loop ----------------------------------------------------------------------------------------


def _build_with_loop(
    volume: Path,
    rules: CopyRules,
    spec: ImageSpec,
    layout: Layout,
    partial: Path,
    totals: TreeTotals,
    cleanup: contextlib.ExitStack,
    notify: Notify,
) -> CopyResult:
    bootloader = layout.partition != "none" and spec.bootloader
    disk, fs_device = _attach(partial, layout, cleanup, need_partition_node=bootloader)
    _mkfs(fs_device, spec, layout, totals)
    mount_point = Path(tempfile.mkdtemp(prefix="amibundle-mnt-"))
    cleanup.callback(_remove_mount_point, mount_point)
    tools.run(["mount", "-t", spec.fs_type, fs_device, mount_point])
    cleanup.callback(_unmount, mount_point)
    _check_free_space(mount_point, totals, spec)
    notify(f"Copying {volume} into the image file (mounted at {mount_point}) ...")
    add_special_folders(mount_point)
    copied = populate(
        volume, walk(volume, rules), mount_point, link_to_volume=False, privileged=True
    )
    add_special_files(mount_point, copied, True)
    install_fstab(mount_point, spec, copied, True, notify)
    install_grub_config(mount_point, spec, layout, copied, True)
    run_script(spec, mount_point, notify)
    if bootloader:
        _install_grub(volume, mount_point, disk, notify)
    root = os.lstat(volume)
    os.chown(mount_point, root.st_uid, root.st_gid)
    mount_point.chmod(stat.S_IMODE(root.st_mode))
    os.utime(mount_point, ns=(root.st_atime_ns, root.st_mtime_ns))
    # Unmount and detach now (not only in cleanup) so the image is complete and quiet.
    tools.run(["sync", "-f", mount_point])
    return copied


def _attach(
    partial: Path, layout: Layout, cleanup: contextlib.ExitStack, *, need_partition_node: bool
) -> tuple[str, str]:
    """Binds the image to a loop device; returns (disk device, file system device)."""
    if layout.partition == "none":
        disk = tools.run(["losetup", "--find", "--show", partial]).stdout.strip()
        cleanup.callback(_detach, disk)
        return disk, disk
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
        return disk, node
    if need_partition_node:
        raise VolumeError(
            f"the kernel shows no partitions of {disk} here (no loop partition scanning), "
            "so GRUB cannot be installed",
            hint="use --no-bootloader, or run where losetup --partscan works",
        )
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
    return disk, part


def _detach(device: str) -> None:
    for attempt in range(20):
        try:
            tools.run(["losetup", "--detach", device])
            return
        except tools.ToolError:
            if attempt == 19:
                log.warning("could not detach %s; detach it with: losetup -d %s", device, device)
                return
            time.sleep(0.1)


def _unmount(mount_point: Path) -> None:
    for attempt in range(20):
        try:
            tools.run(["umount", mount_point])
            return
        except tools.ToolError:
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
            hint="use a larger -s or --size auto",
        )
    if fs.f_favail and fs.f_favail < totals.inodes:
        raise VolumeError(
            f"the data needs {totals.inodes} inodes, the file system has {fs.f_favail}",
            hint="use a larger -s or --size auto",
        )


def _install_grub(volume: Path, mount_point: Path, disk: str, notify: Notify) -> None:
    """GRUB 2 for BIOS, with the volume's own GRUB modules when it has them."""
    modules = volume / "usr/lib/grub/i386-pc"
    directory = modules if modules.is_dir() else Path("/usr/lib/grub/i386-pc")
    if not directory.is_dir():
        raise VolumeError(
            "no GRUB 2 for BIOS (i386-pc) in the volume or on this machine",
            hint="install grub-pc-bin, or use --no-bootloader",
        )
    notify(f"Installing GRUB on {disk} (modules from {directory}) ...")
    tools.run(
        [
            "grub-install",
            "--target=i386-pc",
            f"--directory={directory}",
            f"--boot-directory={mount_point / 'boot'}",
            "--modules=part_msdos part_gpt ext2",
            disk,
        ]
    )
