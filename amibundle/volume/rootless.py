"""The rootless builder: no root, no loop device, no mount (what CI containers can do).

A staging view of the volume made of hard links
(:func:`amibundle.volume.copier.populate`), ``mke2fs -d`` to build the file
system straight into the image file (at the partition's offset for
partitioned images), then ``debugfs -w`` for what an unprivileged copy
cannot carry: device nodes, owners of other users, setgid bits, privileged
attributes, and the root folder's own metadata. A partitioned image's
``/boot/grub`` is staged with the rest; its boot code is written into the
finished file afterwards (:func:`amibundle.volume.boot.finish_disk`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from amibundle import tools
from amibundle.errors import VolumeError
from amibundle.volume.copier import CopyResult, Fixup, populate
from amibundle.volume.fill import (
    add_special_files,
    install_boot_files,
    install_fstab,
    install_grub_config,
    run_script,
)
from amibundle.volume.plan import BLOCK, BuildJob, fs_name, mke2fs_options
from amibundle.volume.rules import walk

__all__ = ["build_rootless"]


def build_rootless(job: BuildJob, cleanup: contextlib.ExitStack) -> CopyResult:
    volume, spec, layout, notify = job.volume, job.spec, job.layout, job.notify
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
        volume, walk(volume, job.rules), staging, link_to_volume=link, privileged=privileged
    )
    add_special_files(staging, copied, privileged)
    install_fstab(staging, spec, copied, privileged, notify)
    install_grub_config(staging, spec, layout, copied, privileged)
    install_boot_files(staging, spec, job.table, copied, privileged)
    run_script(spec, staging, notify)
    notify(f"Writing the {spec.fs_type} file system into {spec.path.name} (mke2fs -d) ...")
    extended = f"root_owner=0:0,offset={layout.fs_offset}" if layout.fs_offset else "root_owner=0:0"
    tools.run(
        [
            "mke2fs",
            *mke2fs_options(spec, layout, job.totals),
            "-E",
            extended,
            "-d",
            staging,
            job.partial,
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
    _apply_fixups(fs_name(job.partial, layout), fixups)
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
