"""What bundle-vol copies from a volume: the rules of ``classic-cli.md`` §3.3.

The classic tool handed these rules to rsync; here they are evaluated in
Python so that both image builders (and the size check before either starts)
see exactly the same tree. Rules are rsync filter patterns, evaluated in
order, first match wins:

1. ``-i`` includes (they override everything below);
2. excludes: non-local mount points below the volume (unless ``-a``), the
   always-excluded ``/dev /media /mnt /proc /sys``, ``-e`` entries, and
   amibundle's own outputs and work folders when they lie in the volume;
3. unless ``--no-filter``, the default filter of sensitive and editor files.

Patterns starting with ``/`` are anchored at the volume's root; others match
at any depth (a pattern without ``/`` matches a name). Unlike the classic
tool, top-level dot-files are copied, and an anchored ``-i`` inside an
excluded folder is honoured (the folders leading to it are created).

Walking never follows symbolic links and crosses into mounted local file
systems, as rsync did.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amibundle.errors import StorageError, UsageError

__all__ = [
    "ALWAYS_EXCLUDED",
    "DEFAULT_FILTER",
    "LOCAL_FS_TYPES",
    "CopyRules",
    "Entry",
    "MountPoint",
    "Pattern",
    "TreeTotals",
    "check_patterns_exist",
    "mount_of",
    "mount_table",
    "non_local_mounts_below",
    "rules_for_volume",
    "walk",
    "measure",
]

log = logging.getLogger("amibundle.volume.rules")

ALWAYS_EXCLUDED = ("/dev", "/media", "/mnt", "/proc", "/sys")
DEFAULT_FILTER = (
    "*/#*#",
    "*/.#*",
    "*.sw",
    "*.swo",
    "*.swp",
    "*~",
    "*.pem",
    "*.priv",
    "*id_rsa*",
    "*id_dsa*",
    "*.gpg",
    "*.jks",
    "*/.ssh/authorized_keys",
    "*/.bash_history",
)
# The classic list (ext2/3/4, xfs, jfs, reiserfs, tmpfs) plus the disk file
# systems that came later; anything else (nfs, fuse, proc, overlay, ...) is
# not copied unless -a is given.
LOCAL_FS_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "jfs", "reiserfs", "tmpfs", "btrfs", "f2fs"}
)


# --- patterns --------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One rsync-style pattern, compiled."""

    text: str
    regex: re.Pattern[str]
    whole_path: bool  # matched against the relative path, else against the name
    dirs_only: bool
    anchored: bool

    @classmethod
    def parse(cls, text: str) -> Pattern:
        body = text
        dirs_only = body.endswith("/") and body != "/"
        body = body.rstrip("/") if dirs_only else body
        anchored = body.startswith("/")
        body = body.lstrip("/") if anchored else body
        whole_path = anchored or "/" in body or "**" in body
        core = _wildcard_regex(body)
        # Unanchored with a slash: matches the end of the path at a folder boundary.
        prefix = "" if anchored or not whole_path else "(?:.*/)?"
        source = f"{prefix}{core}\\Z"
        return cls(text, re.compile(source, re.DOTALL), whole_path, dirs_only, anchored)

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dirs_only and not is_dir:
            return False
        subject = rel if self.whole_path else rel.rpartition("/")[2]
        return self.regex.match(subject) is not None

    def anchored_ancestors(self) -> tuple[str, ...]:
        """For an anchored pattern without wildcards in its folders: those folders."""
        if not self.anchored:
            return ()
        parts = self.text.strip("/").split("/")[:-1]
        if any(_has_wildcard(part) for part in parts):
            return ()
        return tuple("/".join(parts[: i + 1]) for i in range(len(parts)))


def _has_wildcard(text: str) -> bool:
    return any(char in text for char in "*?[")


def _wildcard_regex(pattern: str) -> str:
    """rsync wildmatch: ``*`` and ``?`` stop at ``/``, ``**`` does not, ``[...]`` classes."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                inner = pattern[i + 1 : end]
                if inner[:1] in ("!", "^"):
                    inner = "^" + inner[1:]
                out.append("[" + inner.replace("\\", "\\\\") + "]")
                i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


# --- rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class CopyRules:
    """The ordered filter: includes win, then excludes, then the default filter."""

    includes: tuple[Pattern, ...] = ()
    excludes: tuple[Pattern, ...] = ()
    filters: tuple[Pattern, ...] = ()
    # Folders leading to anchored includes: walked even when excluded.
    include_paths: frozenset[str] = field(default_factory=frozenset)

    def decide(self, rel: str, is_dir: bool) -> bool:
        """True when the entry at ``rel`` (relative, no leading ``/``) is copied."""
        for pattern in self.includes:
            if pattern.matches(rel, is_dir):
                return True
        return not any(p.matches(rel, is_dir) for p in (*self.excludes, *self.filters))

    def leads_to_include(self, rel: str) -> bool:
        return rel in self.include_paths


def rules_for_volume(
    volume: Path,
    *,
    excludes: Sequence[str] = (),
    includes: Sequence[str] = (),
    all_mounts: bool = False,
    use_filter: bool = True,
    own_paths: Iterable[Path] = (),
    mounts: Sequence[MountPoint] | None = None,
) -> CopyRules:
    """The rules for ``volume``. ``own_paths`` are amibundle's own outputs and
    work files (image, partial image, staging tree, parts, mount point); their
    last component may hold ``*``. Those inside the volume are excluded, and
    no ``-i`` may include them (the image would copy itself)."""
    real = Path(os.path.realpath(volume))
    excluded: list[str] = []
    if not all_mounts:
        table = mount_table() if mounts is None else mounts
        excluded += ["/" + rel for rel in non_local_mounts_below(real, table)]
    excluded += ALWAYS_EXCLUDED
    excluded += [_anchor(entry) for entry in excludes]
    own = [_own_pattern(real, path) for path in own_paths]
    excluded += [pattern for pattern in own if pattern is not None]
    include_patterns = tuple(Pattern.parse(_anchor(entry)) for entry in includes)
    rules = CopyRules(
        includes=include_patterns,
        excludes=tuple(Pattern.parse(text) for text in excluded),
        filters=tuple(Pattern.parse(text) for text in DEFAULT_FILTER) if use_filter else (),
        include_paths=frozenset(p for pat in include_patterns for p in pat.anchored_ancestors()),
    )
    _refuse_including_own_paths(real, rules, own_paths)
    return rules


def _own_pattern(real_volume: Path, path: Path) -> str | None:
    """An anchored pattern for one of our own paths, when it lies in the volume."""
    rel = _relative_inside(real_volume, Path(os.path.realpath(path.parent)))
    if rel is None:
        return None
    # The folder is literal; only the name's own "*" is a wildcard.
    name = _escape(path.name).replace("\\*", "*")
    return "/" + (f"{_escape(rel)}/{name}" if rel else name)


def _anchor(entry: str) -> str:
    return entry.strip()


def _escape(rel: str) -> str:
    """A literal path as a pattern (our own paths may contain wildcard characters)."""
    return re.sub(r"([*?\[\\])", r"\\\1", rel)


def _refuse_including_own_paths(real: Path, rules: CopyRules, own_paths: Iterable[Path]) -> None:
    """An include only overrides the rules for what it matches itself, so the
    image copies itself only if an -i entry matches one of our own files."""
    for path in own_paths:
        rel = _relative_inside(real, Path(os.path.realpath(path.parent)))
        if rel is None:
            continue
        sample = path.name.replace("*", "x")
        target = f"{rel}/{sample}" if rel else sample
        for pattern in rules.includes:
            if pattern.matches(target, False):
                raise UsageError(
                    f"{{param}} {pattern.text} includes {path}, which this run writes; "
                    "the image would copy itself",
                    hint="write the outputs outside the volume, or narrow the {param} entry",
                    param="include",
                )


def check_patterns_exist(volume: Path, entries: Sequence[str], param: str) -> None:
    """As the classic tool: an anchored ``-e``/``-i`` entry must name something
    that exists in the volume (as a shell glob); a typo would silently do nothing."""
    for entry in entries:
        entry = entry.strip()
        if not entry:
            raise UsageError("{param} has an empty entry", param=param)
        if not entry.startswith("/"):
            continue  # matches a name at any depth: nothing to check
        if not glob.glob(glob.escape(str(volume).rstrip("/")) + entry.rstrip("/")):  # noqa: PTH207 - a glob below an escaped root
            raise UsageError(
                f"{{param}} {entry}: nothing in the volume {volume} matches it", param=param
            )


def _relative_inside(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` ("" for root itself), None when outside."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    text = str(rel)
    return "" if text == "." else text


# --- mounts ------------------------------------------------------------------------


@dataclass(frozen=True)
class MountPoint:
    """One line of ``/proc/self/mountinfo``."""

    path: Path
    fs_type: str
    source: str
    device: str  # major:minor


def mount_table(mountinfo: Path = Path("/proc/self/mountinfo")) -> tuple[MountPoint, ...]:
    """The mounted file systems (empty when the table cannot be read)."""
    try:
        text = mountinfo.read_text(errors="surrogateescape")
    except OSError:
        return ()
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < separator + 3:
            continue
        mounts.append(
            MountPoint(
                path=Path(_unescape_octal(fields[4])),
                fs_type=fields[separator + 1],
                source=_unescape_octal(fields[separator + 2]),
                device=fields[2],
            )
        )
    return tuple(mounts)


def _unescape_octal(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def non_local_mounts_below(real_volume: Path, mounts: Sequence[MountPoint]) -> list[str]:
    """Relative paths of mount points strictly below the volume whose file system is not local."""
    found = []
    for mount in mounts:
        rel = _relative_inside(real_volume, mount.path)
        if rel and mount.fs_type not in LOCAL_FS_TYPES:
            found.append(_escape(rel))
    return sorted(set(found))


def mount_of(real_path: Path, mounts: Sequence[MountPoint]) -> MountPoint | None:
    """The mount whose mount point is exactly ``real_path`` (the last one wins, as stacked)."""
    found = None
    for mount in mounts:
        if mount.path == real_path:
            found = mount
    return found


# --- walking ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One thing to copy: its path relative to the volume and its lstat."""

    rel: str
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


def walk(volume: Path, rules: CopyRules) -> Iterator[Entry]:
    """The entries to copy, each folder before its contents, names sorted (so
    two walks agree). Symbolic links are never followed."""
    root = str(volume).rstrip("/")
    stack: list[tuple[str, bool]] = [("", False)]  # (relative folder, only what leads to includes)
    while stack:
        folder, rescue_only = stack.pop()
        children = []
        for name in _list_dir(f"{root}/{folder}" if folder else root or "/"):
            rel = f"{folder}/{name}" if folder else name
            try:
                st = os.lstat(f"{root}/{rel}")
            except FileNotFoundError:
                continue  # removed while we walk: a live system
            except OSError as err:
                raise StorageError(f"cannot read {root}/{rel}: {err.strerror}") from None
            is_dir = stat.S_ISDIR(st.st_mode)
            wanted = rules.decide(rel, is_dir)
            if rescue_only and not any(p.matches(rel, is_dir) for p in rules.includes):
                wanted = False
            leads = is_dir and rules.leads_to_include(rel)
            if not wanted and not leads:
                continue
            yield Entry(rel, st)
            if is_dir:
                children.append((rel, not wanted))
        stack.extend(reversed(children))


def _list_dir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))  # noqa: PTH208 - names, not Path objects, for speed
    except FileNotFoundError:
        return []
    except OSError as err:
        raise StorageError(f"cannot read the folder {path}: {err.strerror}") from None


@dataclass(frozen=True)
class TreeTotals:
    """What a tree needs on an ext2/3/4 file system with ``block_size`` blocks."""

    entries: int
    inodes: int
    data_bytes: int  # file contents actually stored (holes excluded)
    needed_bytes: int  # data rounded to blocks, plus folders and long symlinks
    hard_links: int


def measure(entries: Iterable[Entry], *, block_size: int = 4096) -> TreeTotals:
    """Adds up the space and inodes a tree needs (each hard-linked file once)."""
    seen: set[tuple[int, int]] = set()
    count = inodes = data = needed = links = 0
    for entry in entries:
        count += 1
        st = entry.st
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen:
                links += 1
                continue
            seen.add(key)
        inodes += 1
        if stat.S_ISREG(st.st_mode):
            allocated = min(st.st_blocks * 512, _round_up(st.st_size, block_size))
            data += allocated
            needed += _round_up(allocated, block_size)
            # Extent tree blocks of large, fragmented files: about one per 340 extents.
            needed += block_size * (st.st_size // (512 << 20))
        elif stat.S_ISDIR(st.st_mode):
            needed += _round_up(max(st.st_size, block_size), block_size)
        elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:
            needed += block_size  # targets of 60 bytes and more do not fit in the inode
    return TreeTotals(count, inodes, data, needed, links)


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit
