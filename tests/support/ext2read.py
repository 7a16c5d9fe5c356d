"""Reading a whole ext2/3/4 tree out of an image file with debugfs, without mounting.

Independent of amibundle's own debugfs code: the tests compare what this
reader finds with what the synthetic volume holds (via os.lstat).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_ENTRY = re.compile(rb"/(\d+)/([0-7]+)/(\d+)/(\d+)/([^/]*)/(\d*)/\n")
_HEADER = re.compile(rb"^debugfs: (?:ls -p|stat) <(\d+)>\n", re.MULTILINE)


@dataclass(frozen=True)
class Node:
    """One file as stored in the image (paths relative, no leading slash)."""

    ino: int
    mode: int  # full st_mode
    uid: int
    gid: int
    size: int
    mtime: int
    nlink: int
    digest: str | None  # SHA-256 of a regular file's contents
    target: str | None  # symlink target
    rdev: tuple[int, int] | None
    xattrs: dict[str, bytes]


def _debugfs(fs: str, commands: list[str]) -> bytes:
    done = subprocess.run(
        ["debugfs", "-f", "-", fs],
        input="".join(c + "\n" for c in commands).encode(),
        capture_output=True,
        check=True,
        env={"LC_ALL": "C", "PATH": "/usr/sbin:/sbin:/usr/bin:/bin"},
    )
    return done.stdout


def _sections(output: bytes) -> dict[int, bytes]:
    parts = _HEADER.split(output)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def read_tree(fs: str) -> dict[str, Node]:
    """Every entry of the file system ``fs`` (a path, or ``path?offset=N``)."""
    listing: dict[str, tuple[int, int, int, int, int]] = {}
    pending = {"": 2}
    while pending:
        by_ino = {ino: rel for rel, ino in pending.items()}
        out = _debugfs(fs, [f"ls -p <{ino}>" for ino in by_ino])
        pending = {}
        for ino, text in _sections(out).items():
            folder = by_ino[ino]
            for m in _ENTRY.finditer(text):
                name = m.group(5).decode("utf-8", "surrogateescape")
                if name in (".", "..") or m.group(1) == b"0":
                    continue  # 0: an unused slot (lost+found keeps some)
                rel = f"{folder}/{name}" if folder else name
                child = int(m.group(1))
                mode = int(m.group(2), 8)
                size = int(m.group(6) or 0)
                listing[rel] = (child, mode, int(m.group(3)), int(m.group(4)), size)
                if mode >> 12 == 0o04:
                    pending[rel] = child
    inodes = sorted({entry[0] for entry in listing.values()})
    stats = _sections(_debugfs(fs, [f"stat <{ino}>" for ino in inodes]))
    digests = _digests(fs, {e[0] for e in listing.values() if e[1] >> 12 == 0o10})
    slow_links = _contents(fs, {e[0] for e in listing.values() if e[1] >> 12 == 0o12})
    tree = {}
    for rel, (ino, mode, uid, gid, size) in listing.items():
        text = stats[ino].decode("utf-8", "surrogateescape")
        tree[rel] = Node(
            ino=ino,
            mode=mode,
            uid=uid,
            gid=gid,
            size=size,
            mtime=int(re.search(r"mtime: 0x([0-9a-f]+)", text).group(1), 16),  # type: ignore[union-attr]
            nlink=int(re.search(r"Links: (\d+)", text).group(1)),  # type: ignore[union-attr]
            digest=digests.get(ino),
            target=_link_target(text) or slow_links.get(ino, b"").decode("utf-8", "surrogateescape")
            if mode >> 12 == 0o12
            else None,
            rdev=_device(text),
            xattrs=_xattrs(text),
        )
    return tree


def _contents(fs: str, inodes: set[int]) -> dict[int, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        _debugfs(fs, [f"dump <{ino}> {folder}/{ino}" for ino in sorted(inodes)])
        return {ino: Path(folder, str(ino)).read_bytes() for ino in inodes}


def _digests(fs: str, inodes: set[int]) -> dict[int, str]:
    return {ino: hashlib.sha256(data).hexdigest() for ino, data in _contents(fs, inodes).items()}


def _link_target(text: str) -> str | None:
    m = re.search(r'Fast link dest: "(.*)"\n', text, re.DOTALL)
    return m.group(1) if m else None


def _device(text: str) -> tuple[int, int] | None:
    m = re.search(r"Device major/minor number: (\d+):(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _xattrs(text: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    block = re.search(r"Extended attributes:\n((?:  .*\n)+)", text)
    if not block:
        return found
    for line in block.group(1).splitlines():
        m = re.match(r"  (\S+) \((\d+)\)(?: = (.*))?$", line)
        if not m:
            continue
        value = m.group(3) or ""
        if value.startswith('"'):
            found[m.group(1)] = value[1:-1].encode()
        else:
            found[m.group(1)] = bytes.fromhex(value.replace(" ", ""))
    return found


def read_file(fs: str, rel: str) -> bytes:
    tree = read_tree(fs)
    with tempfile.TemporaryDirectory() as folder:
        _debugfs(fs, [f"dump <{tree[rel].ino}> {folder}/f"])
        return Path(folder, "f").read_bytes()
