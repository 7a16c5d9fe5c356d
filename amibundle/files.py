"""Writing outputs so that a failure or Ctrl-C never leaves half a file.

Every output is written under a hidden temporary name in its destination
folder (same file system, so the final rename is atomic) with mode 0600, and
renamed only when complete and checked. Without ``overwrite`` the rename
refuses to replace an existing file, even one that appeared meanwhile;
:func:`refuse_existing` says so earlier, before any work is done.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from amibundle import interrupts
from amibundle.errors import OutputExistsError, StorageError, UsageError, shorten

__all__ = [
    "WORK_PREFIX",
    "TempOutput",
    "open_input",
    "read_input",
    "name_problem",
    "process_is_gone",
    "check_directory",
    "made_folders",
    "publish",
    "pwrite_all",
    "refuse_existing",
    "temp_output",
    "write_all",
    "work_prefix",
    "write_atomically",
    "write_new",
]

log = logging.getLogger("amibundle.files")


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def open_input(path: Path, what: str) -> int:
    """Opens ``path`` for reading and returns the descriptor, if it is a
    regular file (symlinks are followed, like ``tar -h``).

    The file is opened without blocking and checked with fstat before
    anything is read, so a FIFO, a device, a socket or a directory where a
    file belongs is a clear :class:`StorageError` at once instead of a read
    that waits forever. ``OSError`` of the open itself (a missing file, no
    permission) is raised as is, for the caller to word."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        # A socket (or a device with no driver) cannot even be opened: name it.
        with contextlib.suppress(OSError):
            _refuse_other_kinds(path, what, path.stat().st_mode)
        raise
    try:
        _refuse_other_kinds(path, what, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_other_kinds(path: Path, what: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise StorageError(f"{what} {path} is {kind}, not a regular file")


def read_input(path: Path, what: str, *, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of a small input file, checked as
    :func:`open_input` does: more than ``limit`` bytes means the file is too
    large, which the caller words."""
    fd = open_input(path, what)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit + 1)


@functools.lru_cache(maxsize=64)
def _limits(folder: str) -> tuple[int, int]:
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096  # Linux's limits


def name_problem(folder: Path, name: str) -> str | None:
    """Why the file system of ``folder`` cannot hold a file called ``name``
    there (a component too long, or the whole path), or None. Checked before
    anything is created, so a hostile name is an error, not a half-made file."""
    name_max, path_max = _limits(os.fspath(folder))
    size = len(os.fsencode(name))
    where = shorten(str(folder))
    if size > name_max:
        return f"is {size} bytes long; file names in {where} can have at most {name_max}"
    if len(os.fsencode((folder / name).absolute())) >= path_max:
        return f"makes a path longer than the {path_max} bytes {where} allows"
    return None


# Everything amibundle writes before it is complete is named
# ".amibundle-<pid>-<random><suffix>" beside its destination: short whatever
# the final name, and provably ours (with the process that made it) when a
# crash leaves it behind (see amibundle.folder.recover_abandoned).
WORK_PREFIX = ".amibundle-"


def work_prefix() -> str:
    """The name prefix of this process's temporary files and folders."""
    return f"{WORK_PREFIX}{os.getpid()}-"


def process_is_gone(pid: int) -> bool:
    """Whether no process ``pid`` runs (on this machine, in this pid namespace)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


def check_directory(path: Path, param: str) -> None:
    """``path`` must be an existing folder (outputs are written into it)."""
    if not path.is_dir():
        raise UsageError(f"{{param}} {path} is not an existing directory", param=param)


@contextlib.contextmanager
def made_folders(path: Path) -> Iterator[None]:
    """Creates ``path`` and any missing parents for the block; when the block
    fails, the folders it created are removed again (those still empty), so
    a failed command leaves no trace."""
    missing = [folder for folder in (path, *path.parents) if not folder.exists()]
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except OSError as err:
                raise _fail("create the folder", folder, err) from None
            made.append(folder)
        yield
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def refuse_existing(paths: Iterable[Path], *, force: bool, what: str = "") -> None:
    """Raises :class:`OutputExistsError` for the first of ``paths`` that exists
    (a dangling symlink counts), unless ``force``."""
    if force:
        return
    for path in paths:
        if os.path.lexists(path):
            raise OutputExistsError(path, what=what)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Writes all of ``data`` to ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pwrite_all(fd: int, data: memoryview, offset: int, name: str) -> None:
    """Writes all of ``data`` at ``offset`` of ``fd`` (os.pwrite may write less);
    a failure is a :class:`StorageError` naming ``name``."""
    while data:
        try:
            n = os.pwrite(fd, data, offset)
        except OSError as err:
            raise StorageError(f"cannot write {name}: {err.strerror}") from None
        data, offset = data[n:], offset + n


def _fail(action: str, path: Path, err: OSError) -> StorageError:
    return StorageError(f"cannot {action} {path}: {err.strerror or err}")


class TempOutput:
    """A temporary file beside ``final``; :meth:`publish` renames it into place.

    With ``keep_on_failure`` an unpublished file is kept (and named in a
    warning) instead of removed: bundle-vol's ``keep_partial``."""

    def __init__(self, final: Path, *, keep_on_failure: bool = False) -> None:
        self.final = final
        self.keep_on_failure = keep_on_failure
        try:
            fd, name = tempfile.mkstemp(prefix=work_prefix(), suffix=".partial", dir=final.parent)
        except OSError as err:
            raise _fail("write to", final.parent, err) from None
        self.fd = fd
        self.path = Path(name)
        self.published = False

    def close(self) -> None:
        """Closes the descriptor (for writers that use the file by its name)."""
        # Close once: a second close could hit a descriptor reused by another thread.
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def discard(self) -> None:
        """Removes the temporary file (nothing happens after :meth:`publish`)."""
        with contextlib.suppress(OSError):
            self.close()
        if self.published:
            return
        if self.keep_on_failure:
            log.warning("keeping the partial file %s", self.path)
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def publish(
        self, *, overwrite: bool, mode: int | None = 0o644, mtime: int | None = None
    ) -> Path:
        """Sets the file's mode (None: keeps 0600) and time, closes it and
        renames it to the final name. Like tar, cp and gunzip it leaves
        write-back to the kernel: an fsync would wait for the whole image to
        reach the disk."""
        try:
            if mode is not None:
                self.path.chmod(mode)
            self.close()
            if mtime is not None:
                os.utime(self.path, (mtime, mtime))
        except OSError as err:
            raise _fail("write", self.final, err) from None
        publish(self.path, self.final, overwrite=overwrite)
        self.published = True
        return self.final


def publish(temp: Path, final: Path, *, overwrite: bool) -> None:
    """Renames ``temp`` to ``final``; without ``overwrite`` an existing
    ``final`` is an error (checked atomically with a hard link where the file
    system has them)."""
    try:
        if overwrite:
            temp.replace(final)
            return
        try:
            os.link(temp, final)
        except FileExistsError:
            raise OutputExistsError(final) from None
        except OSError:
            # No hard links here (some FUSE or network file systems): the check
            # and the rename are then two steps.
            refuse_existing([final], force=False)
            temp.replace(final)
            return
        temp.unlink()
    except OSError as err:
        raise _fail("write", final, err) from None


@contextlib.contextmanager
def temp_output(final: Path, *, keep_on_failure: bool = False) -> Iterator[TempOutput]:
    """A :class:`TempOutput` that is removed again unless it was published
    (or kept, with ``keep_on_failure``)."""
    out: TempOutput | None = None
    try:
        # An interrupt while the file is made waits until it is known here
        # (and so removed): a signal that struck between mkstemp and this
        # block left a stray temporary file.
        with interrupts.held():
            out = TempOutput(final, keep_on_failure=keep_on_failure)
        yield out
    finally:
        if out is not None:
            out.discard()


def write_atomically(path: Path, data: bytes, *, overwrite: bool, mode: int = 0o644) -> None:
    with temp_output(path) as out:
        try:
            write_all(out.fd, data)
        except OSError as err:
            raise _fail("write", path, err) from None
        out.publish(overwrite=overwrite, mode=mode)


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Creates ``path`` with ``data``; ``path`` must not exist (not even as a
    symbolic link). Never writes through an existing name: in bundle-vol's
    staging tree of hard links that would change the volume itself."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            write_all(fd, data)
        finally:
            os.close(fd)
    except OSError as err:
        raise _fail("write", path, err) from None
