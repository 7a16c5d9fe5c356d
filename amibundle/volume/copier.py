"""Materialising a volume's entries (see :mod:`amibundle.volume.rules`) in a folder.

Two uses, one code path, so both image builders copy the same things the same
way:

* the loop builder copies, as root, into the mounted image: contents (sparse:
  holes stay holes, data moves in the kernel with ``copy_file_range``),
  owners, modes including setuid/setgid/sticky, times to the nanosecond,
  extended attributes (ACLs and capabilities too), symlinks as symlinks,
  hard links as hard links, device nodes, fifos and sockets;
* the rootless builder stages a view for ``mke2fs -d``: regular files and
  device nodes become hard links to the volume's own inodes when allowed
  (same file system, so no data is copied and owners, modes, times and
  extended attributes are exact by construction), otherwise reflinks or
  copies. What an unprivileged copy cannot set (another user's owner, a
  setgid bit, a device node, a ``security.*`` attribute) is returned as a
  :class:`Fixup` for the builder to write into the image with ``debugfs``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from amibundle.errors import StorageError
from amibundle.sparse import data_extents
from amibundle.volume.rules import Entry

__all__ = ["CopyResult", "Fixup", "copy_sparse", "populate"]

log = logging.getLogger("amibundle.volume.copier")

_FICLONE = 0x40049409  # ioctl: share the source's blocks (btrfs, xfs)
_CHUNK = 8 << 20


@dataclass(frozen=True)
class Fixup:
    """Metadata the copy could not give an entry; ``None`` fields are right already."""

    rel: str
    mode: int | None = None  # full st_mode, file type included
    uid: int | None = None
    gid: int | None = None
    device: tuple[int, int] | None = None  # create this node (its type is in mode)
    mtime: int | None = None
    atime: int | None = None
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass
class CopyResult:
    """Counts and what is left to fix; filled while copying."""

    entries: int = 0
    files: int = 0
    folders: int = 0
    hard_links: int = 0  # links within the tree (copies of the volume's hard links)
    linked_to_volume: int = 0  # staged files sharing the volume's inode
    bytes_copied: int = 0
    fixups: list[Fixup] = field(default_factory=list)


def populate(
    volume: Path,
    entries: Iterable[Entry],
    target: Path,
    *,
    link_to_volume: bool,
    privileged: bool,
) -> CopyResult:
    """Creates every entry below ``target``. ``link_to_volume`` stages by hard
    link where possible; ``privileged`` means owners and device nodes can be
    set directly (otherwise they come back as fixups)."""
    copier = _Copier(volume, target, link_to_volume=link_to_volume, privileged=privileged)
    for entry in entries:
        copier.add(entry)
    copier.finish_folders()
    return copier.result


class _Copier:
    def __init__(self, volume: Path, target: Path, *, link_to_volume: bool, privileged: bool):
        self.volume = str(volume).rstrip("/")
        self.target = str(target).rstrip("/")
        self.link_to_volume = link_to_volume
        self.privileged = privileged
        self.result = CopyResult()
        self.first_link: dict[tuple[int, int], str] = {}  # (dev, ino) -> staged path
        self.folders: list[Entry] = []

    def add(self, entry: Entry) -> None:
        st = entry.st
        src = f"{self.volume}/{entry.rel}"
        dst = f"{self.target}/{entry.rel}"
        self.result.entries += 1
        try:
            if stat.S_ISDIR(st.st_mode):
                self._folder(entry, src, dst)
            elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in self.first_link:
                os.link(self.first_link[(st.st_dev, st.st_ino)], dst)
                self.result.hard_links += 1
            else:
                self._new_inode(entry, src, dst)
                if st.st_nlink > 1:
                    self.first_link[(st.st_dev, st.st_ino)] = dst
        except OSError as err:
            raise StorageError(f"cannot copy {src}: {err.strerror or err}") from None

    # -- kinds of entries ------------------------------------------------------

    def _folder(self, entry: Entry, src: str, dst: str) -> None:
        if not self.privileged and not os.access(src, os.R_OK | os.X_OK):
            raise _unreadable(src, entry.st)
        # Writable for us until finish_folders() gives it its real mode.
        Path(dst).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folders.append(entry)
        self.result.folders += 1

    def _new_inode(self, entry: Entry, src: str, dst: str) -> None:
        st = entry.st
        mode = st.st_mode
        linkable = stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        if linkable and self.link_to_volume and self._try_link(src, dst):
            self.result.linked_to_volume += 1
            self.result.files += stat.S_ISREG(mode)
            return
        if stat.S_ISREG(mode):
            if not self.privileged and not os.access(src, os.R_OK):
                raise _unreadable(src, st)
            self.result.bytes_copied += _copy_file(src, dst, st, reflink=self.link_to_volume)
            self.result.files += 1
        elif stat.S_ISLNK(mode):
            Path(dst).symlink_to(Path(src).readlink())
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            if not self.privileged:
                self.result.fixups.append(
                    Fixup(
                        entry.rel,
                        mode=mode,
                        uid=st.st_uid,
                        gid=st.st_gid,
                        device=(os.major(st.st_rdev), os.minor(st.st_rdev)),
                        mtime=int(st.st_mtime),
                        atime=int(st.st_atime),
                    )
                )
                return
            os.mknod(dst, mode, st.st_rdev)
        elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.mknod(dst, stat.S_IFMT(mode) | 0o600)  # unprivileged users may make these
        else:
            log.warning("skipping %s: unknown file type", src)
            return
        self._set_metadata(entry, src, dst)

    def _try_link(self, src: str, dst: str) -> bool:
        try:
            os.link(src, dst)
        except OSError as err:
            # EXDEV: another file system; EPERM: protected_hardlinks (not our file).
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK):
                raise
            return False
        return True

    # -- metadata --------------------------------------------------------------------

    def _set_metadata(self, entry: Entry, src: str, dst: str, *, folder: bool = False) -> None:
        """Owner, attributes, mode, times, in the order that keeps each: chown
        clears setuid bits and file capabilities, so it comes first."""
        st = entry.st
        is_link = stat.S_ISLNK(st.st_mode)
        fix_owner = False
        try:
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
        except PermissionError:
            fix_owner = True
        missing = _copy_xattrs(src, dst, is_link)
        fix_mode = False
        if not is_link:
            wanted = stat.S_IMODE(st.st_mode)
            # Unprivileged, we must still be able to read (and, for folders,
            # enter and clean up) what we stage: mke2fs reads it as us.
            usable = wanted if self.privileged else wanted | (0o700 if folder else 0o400)
            Path(dst).chmod(usable)
            fix_mode = stat.S_IMODE(os.lstat(dst).st_mode) != wanted
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        if fix_owner or fix_mode or missing:
            self.result.fixups.append(
                Fixup(
                    entry.rel,
                    mode=st.st_mode if fix_mode else None,
                    uid=st.st_uid if fix_owner else None,
                    gid=st.st_gid if fix_owner else None,
                    xattrs=missing,
                )
            )

    def finish_folders(self) -> None:
        """Gives folders their metadata, deepest first (adding entries changed their times)."""
        for entry in reversed(self.folders):
            src = f"{self.volume}/{entry.rel}"
            dst = f"{self.target}/{entry.rel}"
            try:
                self._set_metadata(entry, src, dst, folder=True)
            except OSError as err:
                raise StorageError(f"cannot copy {src}: {err.strerror or err}") from None


def _unreadable(path: str, st: os.stat_result) -> StorageError:
    return StorageError(
        f"cannot read {path} (mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}) "
        "as an unprivileged user",
        hint="run as root, in a user namespace that owns the tree (unshare -r), or make it "
        "readable",
    )


def _copy_xattrs(src: str, dst: str, is_link: bool) -> tuple[tuple[str, bytes], ...]:
    """Copies extended attributes; returns those that could not be set here."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EPERM):
            return ()
        raise
    missing = []
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
        except OSError as err:
            if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.EACCES):
                continue
            raise
        try:
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EACCES):
                raise
            if not (is_link and name.startswith("user.")):
                missing.append((name, value))
    return tuple(missing)


def _copy_file(src: str, dst: str, st: os.stat_result, *, reflink: bool) -> int:
    """Copies a regular file, keeping holes; returns the bytes of data copied."""
    # Without blocking, and checked again: the walk saw a regular file, but
    # a live volume may have put a FIFO in its place since.
    src_fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(src_fd).st_mode):
            raise StorageError(f"{src} changed while it was being copied: it is no longer a file")
        os.set_blocking(src_fd, True)
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if reflink and _try_reflink(src_fd, dst_fd):
                return 0
            return copy_sparse(src_fd, dst_fd, st.st_size)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _try_reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
    except OSError:
        return False
    return True


def copy_sparse(src_fd: int, dst_fd: int, size: int) -> int:
    """Copies the data extents of ``src_fd`` to the same offsets of ``dst_fd``
    and sets its size, so holes stay holes. Returns the bytes copied."""
    copied = sum(
        _copy_range(src_fd, dst_fd, extent.offset, extent.offset + extent.length)
        for extent in data_extents(src_fd, size)
    )
    os.ftruncate(dst_fd, size)
    return copied


def _copy_range(src_fd: int, dst_fd: int, start: int, end: int) -> int:
    position = start
    with contextlib.suppress(OSError):
        while position < end:
            count = os.copy_file_range(
                src_fd, dst_fd, min(end - position, 1 << 30), position, position
            )
            if count == 0:
                break
            position += count
    # Whatever the kernel would not copy (EXDEV, a short copy), read and write.
    while position < end:
        data = os.pread(src_fd, min(_CHUNK, end - position), position)
        if not data:
            break
        written = os.pwrite(dst_fd, data, position)
        position += written
    return position - start
