"""Running external programs: the one place that imports :mod:`subprocess`.

Every tool amibundle needs (``mke2fs``, ``debugfs``, ``losetup``, ``sfdisk``,
...) runs through :func:`run`, which resolves the program first (a missing
one is :class:`ToolNotFound`, naming the package to install), runs it with
``LC_ALL=C`` so its messages are parseable, stdin from ``/dev/null`` so it can
never wait for an answer, and logs the command line at debug level. A
non-zero exit is :class:`ToolError`, whose ``str()`` is one line naming the
tool, its exit status and the last line it wrote on stderr. On Ctrl-C the child
is terminated and waited for before the interruption goes on, so no program
outlives the step that started it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from amibundle.errors import ToolError, ToolNotFound

__all__ = [
    "PACKAGES",
    "Completed",
    "ToolError",
    "ToolNotFound",
    "run",
    "which",
]

log = logging.getLogger("amibundle.tools")

# Where each program comes from (Debian/Ubuntu package names), for the hint of
# ToolNotFound. Programs not listed are looked up under their own name.
PACKAGES: Mapping[str, str] = {
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "xfs_admin": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "blkid": "util-linux",
    "sfdisk": "fdisk",
    "sgdisk": "gdisk",
    "grub-mkimage": "grub-pc-bin grub2-common",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "setpriv": "util-linux",
    "udevadm": "udev",
    "qemu-img": "qemu-utils",
}
# Administration programs live in sbin, which an unprivileged user's PATH
# often lacks although running them (mke2fs on a file) needs no privilege.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_STDERR_KEEP = 64 << 10  # how much of a tool's stderr an error keeps
_TERMINATE_GRACE = 5.0  # seconds a child gets to exit after SIGTERM


@dataclass(frozen=True)
class Completed:
    """A program that ran to a zero exit status, with what it wrote."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(tool: str, package: str | None = None) -> str:
    """The full path of ``tool`` on ``PATH`` (or in sbin); ToolNotFound if absent."""
    if os.sep in tool:
        if os.access(tool, os.X_OK) and not Path(tool).is_dir():
            return tool
        raise ToolNotFound(tool, package or PACKAGES.get(tool, tool))
    found = shutil.which(tool)
    if found is None:
        path = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
        found = shutil.which(tool, path=path)
    if found is None:
        raise ToolNotFound(tool, package or PACKAGES.get(tool, tool))
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: str | bytes | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    check: bool = True,
) -> Completed:
    """Runs a program to completion and returns what it wrote.

    ``argv[0]`` is resolved with :func:`which`. ``env`` entries are added to
    the inherited environment. ``input`` is written to the program's stdin
    (otherwise stdin is ``/dev/null``). With ``capture=False`` the program's
    stdout goes to ours (stderr is still captured for errors). With
    ``check`` (the default) a non-zero exit raises :class:`ToolError`.
    """
    words = [os.fspath(word) for word in argv]
    if not words:
        raise ValueError("run() needs a program")
    words[0] = which(words[0])
    log.debug("+ %s", shlex.join(words))
    data = input.encode("utf-8", "surrogateescape") if isinstance(input, str) else input
    child_env = {**os.environ, **(env or {}), "LC_ALL": "C"}
    try:
        process = subprocess.Popen(
            words,
            stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=child_env,
        )
    except OSError as failure:  # not executable, no "#!" line, a bad interpreter...
        reason = f"cannot run it: {failure.strerror}"
        raise ToolError([Path(words[0]).name, *words[1:]], 126, reason) from None
    try:
        out, err = process.communicate(data)
    except BaseException:
        _stop(process)
        raise
    stdout = (out or b"").decode("utf-8", "surrogateescape")
    stderr = (err or b"")[-_STDERR_KEEP:].decode("utf-8", "replace")
    if stderr.strip():
        log.debug("%s stderr: %s", Path(words[0]).name, stderr.rstrip())
    if check and process.returncode != 0:
        raise ToolError([Path(words[0]).name, *words[1:]], process.returncode, stderr or stdout)
    return Completed(tuple(words), process.returncode, stdout, stderr)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminates a child (KILL after a grace period) and reaps it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(_TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
