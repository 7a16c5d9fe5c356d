"""The synthetic volume for the bundle-vol tests, and how to compare an image with it.

The volume holds every kind of thing bundle-vol must copy faithfully (issue 5)
and a file for every rule that must leave something out. What should and
should not reach the image is written down here, independently of the rule
engine under test, and checked against the image read back with debugfs (or
through a mount for the loop builder).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amibundle.volume.plan import loop_available
from tests.support.common import REPO
from tests.support.ext2read import Node

IS_ROOT = os.geteuid() == 0
NOBODY = 65534

# Excluded by the rules: always-excluded folders, the default filter, -e.
ABSENT = (
    "proc",
    "sys",
    "dev",
    "mnt",
    "media",
    "etc/#auto#",
    "etc/.#lock",
    "etc/vim.sw",
    "etc/vim.swo",
    "etc/vim.swp",
    "etc/notes~",
    "etc/server.pem",
    "etc/secret.priv",
    "home/user/id_rsa.pub",
    "home/user/.ssh/id_dsa",
    "home/user/keyring.gpg",
    "home/user/store.jks",
    "root/.ssh/authorized_keys",
    "root/.bash_history",
    "var/cache/junk",
    "var/cache/deeper",
)
# Kept although a rule would drop them: -i entries.
INCLUDED = ("etc/keep.pem", "var/cache/keepme")
EXCLUDES = ("/var/cache",)
INCLUDES = ("/etc/keep.pem", "/var/cache/keepme")
# Folders whose times the build itself changes (special folders, fstab).
TOUCHED_FOLDERS = {"", "etc", "dev", "mnt", "proc", "sys", "boot/grub", "boot"}
# What the image has beyond the volume's own entries.
ADDED = {
    "lost+found",
    "mnt",
    "proc",
    "sys",
    "dev",
    "dev/null",
    "dev/zero",
    "dev/tty",
    "dev/console",
    "dev/X0R",
    "etc/fstab.old",
}

DEEP = "/".join(["d" * 60] * 6)  # > 255 bytes of path


@dataclass(frozen=True)
class SyntheticVolume:
    root: Path
    outside: Path  # target of the symlink that leaves the volume

    def expected(self) -> list[str]:
        """Relative paths that must be in the image."""
        found = []
        for rel in _all_paths(self.root):
            if any(rel == a or rel.startswith(a + "/") for a in ABSENT) and rel not in INCLUDED:
                continue
            found.append(rel)
        # The folders leading to a rescued include exist too.
        return sorted(set(found) | {"var/cache"})


def _all_paths(root: Path) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            yield str((Path(folder) / name).relative_to(root))


def _write(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def build_volume(base: Path) -> SyntheticVolume:
    root = base / "vol"
    outside = base / "outside.txt"
    outside.write_text("outside the volume\n")
    _write(root / "etc/hostname", b"synthetic\n")
    _write(root / "etc/fstab", b"/dev/xvda1 / ext4 defaults 1 1\n")
    _write(root / "empty")
    big = root / "usr/share/big.bin"
    _write(big, os.urandom(3 << 20))
    with open(_write(root / "var/lib/sparse.img"), "r+b") as handle:
        handle.truncate(8 << 20)
        handle.seek(5 << 20)
        handle.write(b"data in the middle of holes")
    _write(root / "usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
    os.link(root / "usr/bin/tool", root / "usr/bin/tool-link")
    (root / "sbin").mkdir()
    os.link(root / "usr/bin/tool", root / "sbin/tool-alias")
    (root / "usr/lib").mkdir()
    (root / "lib").symlink_to("usr/lib")
    (root / "etc/abs-link").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "etc/escape").symlink_to(os.path.relpath(outside, root / "etc"))
    (root / "usr/long-link").symlink_to("x" * 120)  # not an inline ("fast") symlink
    _write(root / "usr/bin/suid", b"suid", 0o4755)
    _write(root / "usr/bin/sgid", b"sgid", 0o2755)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "srv/shared").mkdir(parents=True)
    (root / "srv/shared").chmod(0o2775)
    (root / "run").mkdir()
    os.mkfifo(root / "run/fifo", 0o640)
    os.setxattr(root / "etc/hostname", "user.comment", b"\x00\xffbinary value")
    os.setxattr(root / "usr/bin/tool", "user.origin", b"synthetic")
    _write(root / "data/with space", b"space\n")
    _write(root / "data/new\nline", b"newline\n")
    _write(root / "data/ünïcødé ☃", b"unicode\n")
    _write(root / DEEP / "deep-file", b"deep\n")
    _write(root / ".dotfile", b"top-level dot-file\n")
    _write(root / ".dotdir/inner", b"inner\n")
    for rel in ABSENT[5:19]:
        _write(root / rel, b"filtered\n")
    _write(root / "etc/keep.pem", b"kept by -i\n")
    _write(root / "home/user/notes.txt", b"not filtered\n")
    for rel in ("proc/1/status", "sys/kernel/x", "dev/sda", "mnt/data/f", "media/cdrom/f"):
        _write(root / rel, b"never copied\n")
    _write(root / "var/cache/junk", b"excluded by -e\n")
    _write(root / "var/cache/deeper/junk", b"excluded by -e\n")
    _write(root / "var/cache/keepme", b"rescued by -i\n")
    if IS_ROOT:
        _write(root / "home/user/owned", b"odd owner\n")
        os.chown(root / "home/user/owned", 1234, 5678)
        os.chown(root / "home/user", 1234, 5678)
        _write(root / "opt/high-uid", b"high uid\n")
        os.chown(root / "opt/high-uid", 100000, 70000)
        os.mknod(root / "usr/lib/udev-null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(root / "usr/lib/blockdev", stat.S_IFBLK | 0o660, os.makedev(8, 0))
        os.chown(root / "usr/lib/blockdev", 0, 6)
    # Distinct, old, whole-second times (ext2/3/4 via mke2fs -d keep seconds).
    stamp = 1_500_000_000
    for index, rel in enumerate(sorted(_all_paths(root), key=lambda r: -r.count("/"))):
        os.utime(root / rel, (stamp + index, stamp + 2 * index), follow_symlinks=False)
    os.utime(root, (stamp, stamp))
    return SyntheticVolume(root, outside)


# --- running bundle-vol --------------------------------------------------------------


def loop_attaches() -> bool:
    """Whether the loop builder can run here and losetup really attaches a file
    (some containers have /dev/loop-control but no free loop device)."""
    if not loop_available()[0]:
        return False
    with tempfile.NamedTemporaryFile() as handle:
        handle.truncate(1 << 20)
        done = subprocess.run(
            ["losetup", "--find", "--show", handle.name],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return False
        subprocess.run(["losetup", "-d", done.stdout.strip()], check=False)
    return True


def cli(
    argv: list[str],
    *,
    unprivileged: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Runs ``amibundle bundle-vol`` in a child process (as nobody when asked)."""
    command = [sys.executable, "-m", "tests.support.volume_runner", *argv]
    if unprivileged:
        if not IS_ROOT:
            pass  # already unprivileged
        elif shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to run as an unprivileged user")
        else:
            command = [
                "setpriv",
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "--",
                *command,
            ]
    child_env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": "/tmp", **(env or {})}
    child_env["PATH"] = child_env.get("PATH", "") + ":/usr/sbin:/sbin"
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env,
        timeout=timeout,
        check=False,
    )


# --- comparing ----------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_tree(volume: SyntheticVolume, tree: dict[str, Node], *, owners: bool = True) -> None:
    """The image's tree equals the volume's expected part: contents, modes,
    owners, times, links, attributes. Raises AssertionError listing differences."""
    problems: list[str] = []
    expected = volume.expected()
    groups: dict[tuple[int, int], set[int]] = {}
    for rel in expected:
        node = tree.get(rel)
        if node is None:
            problems.append(f"missing: {rel!r}")
            continue
        st = os.lstat(volume.root / rel)
        if node.mode != st.st_mode:
            problems.append(f"{rel!r}: mode {node.mode:o} != {st.st_mode:o}")
        if owners and (node.uid, node.gid) != (st.st_uid, st.st_gid):
            problems.append(f"{rel!r}: owner {node.uid}:{node.gid} != {st.st_uid}:{st.st_gid}")
        if rel not in TOUCHED_FOLDERS and node.mtime != int(st.st_mtime):
            problems.append(f"{rel!r}: mtime {node.mtime} != {int(st.st_mtime)}")
        if stat.S_ISREG(st.st_mode):
            if node.size != st.st_size or node.digest != digest(volume.root / rel):
                problems.append(f"{rel!r}: contents differ")
            groups.setdefault((st.st_dev, st.st_ino), set()).add(node.ino)
        if stat.S_ISLNK(st.st_mode) and node.target != str((volume.root / rel).readlink()):
            problems.append(f"{rel!r}: link target {node.target!r}")
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if node.rdev != rdev:
                problems.append(f"{rel!r}: device {node.rdev} != {rdev}")
        wanted = {
            n: os.getxattr(volume.root / rel, n, follow_symlinks=False)
            for n in os.listxattr(volume.root / rel, follow_symlinks=False)
            if n.startswith("user.")
        }
        got = {n: v for n, v in node.xattrs.items() if n.startswith("user.")}
        if wanted != got:
            problems.append(f"{rel!r}: xattrs {got} != {wanted}")
    for key, inodes in groups.items():
        if len(inodes) != 1:
            problems.append(f"hard links of inode {key} became {len(inodes)} files")
    allowed = set(expected) | ADDED
    extra = [rel for rel in tree if rel not in allowed and not rel.startswith("lost+found/")]
    problems += [f"unexpected: {rel!r}" for rel in sorted(extra)]
    assert not problems, "\n".join(problems)


def check_specials(tree: dict[str, Node]) -> None:
    """Empty mnt proc sys dev, and the classic nodes in dev."""
    for folder in ("mnt", "proc", "sys"):
        assert stat.S_ISDIR(tree[folder].mode)
        assert not [r for r in tree if r.startswith(folder + "/")], folder
    for name, numbers in (("null", (1, 3)), ("zero", (1, 5)), ("tty", (5, 0)), ("console", (5, 1))):
        node = tree[f"dev/{name}"]
        assert stat.S_ISCHR(node.mode) and node.rdev == numbers, name
        assert node.uid == 0
    assert tree["dev/X0R"].target == "null"
