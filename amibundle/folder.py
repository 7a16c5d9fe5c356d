"""A bundle in a folder, published all or nothing.

:class:`DirectoryPartSink` writes parts into a hidden work folder beside the
bundle, and :meth:`commit` moves them
and the manifest into place so that the bundle appears complete or not at
all:

* the manifest is moved last, so a reader never sees a manifest whose parts
  are not all there;
* with ``overwrite``, the old bundle's files are first moved aside into the
  work folder (its manifest first), and moved back if publishing fails;
* every move is written to a journal in the work folder before it is made,
  and a failure undoes the moves made so far;
* Ctrl-C and SIGTERM are held off for the few renames of a commit (in the
  main thread), so an interrupt finds the bundle either not yet published or
  complete.

After a crash (``kill -9``, power loss) the work folder stays. Its name,
``.amibundle-<pid>-<random>.bundle``, carries the process id that made it;
:func:`recover_abandoned` undoes the journal of every work folder (and
removes every temporary file) whose process is gone, so a rerun is never
blocked by the leftovers of a run that never published a manifest.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from amibundle import interrupts
from amibundle.errors import OutputExistsError, StorageError
from amibundle.files import WORK_PREFIX, process_is_gone, work_prefix
from amibundle.parts import PartRecord

__all__ = ["DirectoryPartSink", "bundle_files", "recover_abandoned", "remove_tree_or_file"]

log = logging.getLogger("amibundle.folder")

_JOURNAL = "journal"
_ASIDE = "old"
_MANIFEST = "manifest"
_BESIDE = "beside"


def _storage_error(action: str, path: Path, err: OSError) -> StorageError:
    return StorageError(f"cannot {action} {path}: {err.strerror or err}")


class DirectoryPartSink:
    """Writes parts into a hidden work folder inside ``destination`` and
    publishes them, with the manifest, all or nothing on :meth:`commit`."""

    def __init__(self, destination: Path, prefix: str, *, overwrite: bool = False) -> None:
        self.destination = destination
        self.prefix = prefix
        self.overwrite = overwrite
        try:
            work = tempfile.mkdtemp(prefix=work_prefix(), suffix=".bundle", dir=destination)
        except OSError as err:
            raise _storage_error("write to", destination, err) from None
        self._work = Path(work)
        self._file: io.FileIO | None = None
        self._lock = threading.Lock()  # write() and abort() come from different threads
        self._aborted = False

    def _temp_path(self, index: int) -> Path:
        return self._work / f"part.{index}"

    def open_part(self, index: int) -> None:
        path = self._temp_path(index)
        with self._lock:
            self._check_not_aborted()
            try:
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR
                )
            except OSError as err:
                raise _storage_error("create", path, err) from None
            self._file = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: memoryview) -> None:
        with self._lock:
            self._check_not_aborted()
            assert self._file is not None
            try:
                self._file.write(data)
            except OSError as err:
                raise _storage_error("write", self._work, err) from None

    def close_part(self, record: PartRecord) -> None:
        with self._lock:
            self._check_not_aborted()
            assert self._file is not None
            try:
                self._file.close()
            except OSError as err:
                raise _storage_error("write", self._temp_path(record.index), err) from None
            self._file = None

    def _check_not_aborted(self) -> None:
        if self._aborted:
            raise StorageError(f"the bundle in {self.destination} was abandoned")

    def existing(self, names: Sequence[str]) -> list[Path]:
        return [self.destination / n for n in names if os.path.lexists(self.destination / n)]

    def commit(
        self,
        filenames: Sequence[str],
        manifest: tuple[str, bytes] | None = None,
        *,
        beside: Sequence[tuple[str, bytes]] = (),
    ) -> list[Path]:
        """Publishes the parts as ``filenames``, then the files ``beside``
        them (name and bytes, mode 0600: a key made for this bundle), then
        ``manifest`` (its file name and bytes), all or nothing; returns the
        parts' paths. Without ``overwrite`` an existing file of the bundle is
        an error and nothing is moved; with it, the files of the bundle it
        replaces (listed by ``stale`` names of the same prefix) go."""
        extra = [name for name, _data in beside]
        names = [*filenames, *extra, *([manifest[0]] if manifest else [])]
        if not self.overwrite and (clash := self.existing(names)):
            raise OutputExistsError(clash[0])
        for index, (_name, data) in enumerate(beside):
            _write_new(self._work / f"{_BESIDE}.{index}", data)
        if manifest is not None:
            _write_new(self._work / _MANIFEST, manifest[1])
        with interrupts.held(), _Journal(self._work / _JOURNAL) as journal:
            try:
                if self.overwrite:
                    self._move_aside(journal, [manifest[0]] if manifest else [])
                    self._move_aside(journal, bundle_files(self.destination, self.prefix))
                    self._move_aside(journal, extra)
                for index, name in enumerate(filenames):
                    self._place(journal, self._temp_path(index), name, mode=0o644)
                for index, name in enumerate(extra):
                    self._place(journal, self._work / f"{_BESIDE}.{index}", name, mode=0o600)
                if manifest is not None:
                    self._place(journal, self._work / _MANIFEST, manifest[0], mode=0o644)
            except BaseException:
                _undo(self.destination, self._work, journal.entries())
                raise
        self._remove_work()
        return [self.destination / name for name in filenames]

    def _move_aside(self, journal: _Journal, names: Sequence[str]) -> None:
        aside = self._work / _ASIDE
        aside.mkdir(exist_ok=True)
        for name in names:
            final = self.destination / name
            if not os.path.lexists(final) or os.path.lexists(aside / name):
                continue
            journal.record("aside", name)
            _rename(final, aside / name)

    def _place(self, journal: _Journal, source: Path, name: str, *, mode: int) -> None:
        source.chmod(mode)
        journal.record("placed", name, source.stat().st_ino)
        _rename(source, self.destination / name)

    def abort(self) -> None:
        """Removes the work folder; a write in progress ends with an error."""
        with self._lock:
            self._aborted = True
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
        self._remove_work()

    def _remove_work(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)


def _write_new(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError as err:
        raise _storage_error("write", path, err) from None


def _rename(source: Path, target: Path) -> None:
    try:
        source.replace(target)
    except OSError as err:
        raise _storage_error("write", target, err) from None


_PART_NAME = re.compile(r"\.part\.[0-9]+")


def bundle_files(destination: Path, prefix: str) -> list[str]:
    """The part file names of a bundle called ``prefix`` in ``destination``."""
    names = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(destination):
            if entry.name.startswith(prefix) and _PART_NAME.fullmatch(entry.name[len(prefix) :]):
                names.append(entry.name)
    return sorted(names)


class _Journal:
    """The moves of a commit, one line each, written before the move."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__

    def record(self, action: str, name: str, inode: int = 0) -> None:
        self._handle.write(f"{action} {inode} {name}\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def entries(self) -> list[tuple[str, int, str]]:
        return _read_journal(self._path)

    def __enter__(self) -> _Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def _read_journal(path: Path) -> list[tuple[str, int, str]]:
    entries = []
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            action, _, rest = line.partition(" ")
            inode, _, name = rest.partition(" ")
            if action in ("aside", "placed") and inode.isdigit() and name and "/" not in name:
                entries.append((action, int(inode), name))
    return entries


def _undo(destination: Path, work: Path, entries: Sequence[tuple[str, int, str]]) -> None:
    """Reverses a commit's moves, last first: files it placed are removed
    (only if still the very file placed), files it moved aside come back."""
    for action, inode, name in reversed(entries):
        final = destination / name
        if action == "placed":
            with contextlib.suppress(OSError):
                if os.lstat(final).st_ino == inode:
                    final.unlink()
        elif not os.path.lexists(final):
            with contextlib.suppress(OSError):
                (work / _ASIDE / name).replace(final)


def recover_abandoned(destination: Path) -> list[Path]:
    """Cleans up after runs that crashed in ``destination``: the work
    folders and temporary files of processes that are gone. A work folder's
    journal is undone first (a bundle half published comes back out, an old
    one moved aside comes back in). Returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(destination):
            pid = _owner(entry.name)
            if pid is None or not process_is_gone(pid):
                continue
            path = Path(entry.path)
            if entry.name.endswith(".bundle") and entry.is_dir(follow_symlinks=False):
                _undo(destination, path, _read_journal(path / _JOURNAL))
            remove_tree_or_file(path)
            log.warning("removed %s, left by an interrupted run (process %s)", path, pid)
            removed.append(path)
    return removed


def _owner(name: str) -> int | None:
    """The process id in a work name ``.amibundle-<pid>-...``, or None."""
    if not name.startswith(WORK_PREFIX):
        return None
    pid = name[len(WORK_PREFIX) :].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_tree_or_file(path: Path) -> None:
    """Removes a file, or a folder and everything in it, making read-only
    folders (an unprivileged copy of a tree has them) writable as it goes."""

    def allow_and_retry(func: Callable[..., object], name: str, exc: object) -> None:
        with contextlib.suppress(OSError):
            Path(name).parent.chmod(0o700)
            func(name)

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=allow_and_retry)
    else:
        path.unlink(missing_ok=True)
