"""Writing outputs so that a failure or Ctrl-C never leaves half a file.

Every output is written under a hidden temporary name in its destination
folder (same file system, so the final rename is atomic) with mode 0600, and
renamed only when complete and checked. Without ``overwrite`` the rename
refuses to replace an existing file, even one that appeared meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from amibundle.errors import OutputExistsError, StorageError

__all__ = ["TempOutput", "publish", "temp_output", "write_atomically"]


def _fail(action: str, path: Path, err: OSError) -> StorageError:
    return StorageError(f"cannot {action} {path}: {err.strerror or err}")


class TempOutput:
    """A temporary file beside ``final``; :meth:`publish` renames it into place."""

    def __init__(self, final: Path) -> None:
        self.final = final
        try:
            fd, name = tempfile.mkstemp(
                prefix=f".{final.name}.", suffix=".partial", dir=final.parent
            )
        except OSError as err:
            raise _fail("write to", final.parent, err) from None
        self.fd = fd
        self.path = Path(name)
        self.published = False

    def _close(self) -> None:
        # Close once: a second close could hit a descriptor reused by another thread.
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def discard(self) -> None:
        """Removes the temporary file (nothing happens after :meth:`publish`)."""
        with contextlib.suppress(OSError):
            self._close()
        if not self.published:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def publish(self, *, overwrite: bool, mode: int = 0o644, mtime: int | None = None) -> Path:
        """Sets the file's mode and time, closes it and renames it to the final
        name. Like tar, cp and gunzip it leaves write-back to the kernel: an
        fsync would wait for the whole image to reach the disk."""
        try:
            os.fchmod(self.fd, mode)
            self._close()
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
            raise OutputExistsError(f"{final} already exists; use --force to replace it") from None
        except OSError:
            # No hard links here (some FUSE or network file systems): the check
            # and the rename are then two steps.
            if final.exists():
                raise OutputExistsError(
                    f"{final} already exists; use --force to replace it"
                ) from None
            temp.replace(final)
            return
        temp.unlink()
    except OSError as err:
        raise _fail("write", final, err) from None


@contextlib.contextmanager
def temp_output(final: Path) -> Iterator[TempOutput]:
    """A :class:`TempOutput` that is removed again unless it was published."""
    out = TempOutput(final)
    try:
        yield out
    finally:
        out.discard()


def write_atomically(path: Path, data: bytes, *, overwrite: bool, mode: int = 0o644) -> None:
    with temp_output(path) as out:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(out.fd, view) :]
        except OSError as err:
            raise _fail("write", path, err) from None
        out.publish(overwrite=overwrite, mode=mode)
