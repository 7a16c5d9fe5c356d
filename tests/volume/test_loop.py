"""The loop builder (root with a working loop device): the same tree checks,
through a read-only mount this time, and the partition layouts."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amibundle.volume.plan import loop_available
from tests.support.ext2read import Node, read_tree
from tests.support.volumes import (
    EXCLUDES,
    INCLUDES,
    SyntheticVolume,
    check_specials,
    cli,
    compare_tree,
    digest,
    loop_attaches,
)

pytestmark = pytest.mark.slow

_usable, _why = loop_available()
needs_loop = pytest.mark.skipif(not _usable, reason=f"loop builder unavailable: {_why}")


def _args(volume: SyntheticVolume, out: Path, *extra: str) -> list[str]:
    return [
        "-v",
        str(volume.root),
        "-d",
        str(out),
        "--clone-only",
        "--builder",
        "loop",
        "--fs-type",
        "ext4",
        "-s",
        "48",
        "-e",
        ",".join(EXCLUDES),
        "-i",
        ",".join(INCLUDES),
        "--no-inherit",
        *extra,
    ]


@contextlib.contextmanager
def mounted(image: Path, offset: int = 0) -> Iterator[Path]:
    point = Path(tempfile.mkdtemp(prefix="amibundle-check-"))
    options = f"ro,loop,offset={offset}"
    subprocess.run(["mount", "-o", options, str(image), str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)
        point.rmdir()


def tree_through_mount(root: Path) -> dict[str, Node]:
    """The mounted tree in the reader's format, with os.lstat."""
    tree = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = os.lstat(path)
            rel = str(path.relative_to(root))
            tree[rel] = Node(
                ino=st.st_ino,
                mode=st.st_mode,
                uid=st.st_uid,
                gid=st.st_gid,
                size=st.st_size,
                mtime=int(st.st_mtime),
                nlink=st.st_nlink,
                digest=digest(path) if stat.S_ISREG(st.st_mode) else None,
                target=str(path.readlink()) if stat.S_ISLNK(st.st_mode) else None,
                rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else None,
                xattrs={
                    n: os.getxattr(path, n, follow_symlinks=False)
                    for n in os.listxattr(path, follow_symlinks=False)
                },
            )
    return tree


def _no_leftovers(out: Path) -> None:
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    assert str(out) not in loops
    assert "amibundle-mnt-" not in Path("/proc/self/mountinfo").read_text()


@needs_loop
def test_loop_tree_through_mount(synthetic: SyntheticVolume, out_dir: Path) -> None:
    if not loop_attaches():
        pytest.skip("losetup cannot attach a file here")
    done = cli(_args(synthetic, out_dir))
    assert done.returncode == 0, done.stderr
    image = out_dir / "image"
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)
    with mounted(image) as root:
        tree = tree_through_mount(root)
        compare_tree(synthetic, tree)
        check_specials(tree)
        # Holes stay holes: the 8 MiB sparse file takes a few blocks only.
        assert os.lstat(root / "var/lib/sparse.img").st_blocks * 512 < 1 << 20
    _no_leftovers(out_dir)


@needs_loop
def test_both_builders_make_the_same_tree(synthetic: SyntheticVolume, out_dir: Path) -> None:
    if not loop_attaches():
        pytest.skip("losetup cannot attach a file here")
    for builder in ("loop", "rootless"):
        done = cli([*_args(synthetic, out_dir, "-p", builder), "--builder", builder])
        assert done.returncode == 0, done.stderr
    loop, rootless = read_tree(str(out_dir / "loop")), read_tree(str(out_dir / "rootless"))
    assert sorted(loop) == sorted(rootless)
    for rel, node in loop.items():
        other = rootless[rel]
        assert (node.mode, node.uid, node.gid, node.digest, node.target, node.rdev) == (
            other.mode,
            other.uid,
            other.gid,
            other.digest,
            other.target,
            other.rdev,
        ), rel


@needs_loop
@pytest.mark.parametrize("table", ["mbr", "gpt"])
def test_partition_layouts(synthetic: SyntheticVolume, out_dir: Path, table: str) -> None:
    if not loop_attaches():
        pytest.skip("losetup cannot attach a file here")
    done = cli(_args(synthetic, out_dir, "-P", table, "--no-bootloader"))
    assert done.returncode == 0, done.stderr
    image = out_dir / "image"
    layout = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    if table == "mbr":
        assert layout["label"] == "dos"
        (part,) = layout["partitions"]
        assert part["start"] == 2048 and part.get("bootable") is True
        assert part["type"] == "83"
        assert part["start"] + part["size"] == 48 * 2048
    else:
        assert layout["label"] == "gpt"
        printed = subprocess.run(
            ["sgdisk", "-p", str(image)], capture_output=True, text=True, check=True
        ).stdout
        rows = {
            line.split()[0]: line.split()
            for line in printed.splitlines()
            if line.strip()[:1].isdigit()
        }
        assert rows["128"][1:3] == ["2048", "4095"] and rows["128"][5] == "EF02"
        assert rows["1"][1] == "4096" and rows["1"][5] == "8300"
        part = next(p for p in layout["partitions"] if p["node"].endswith("image1"))
    with mounted(image, part["start"] * 512) as root:
        compare_tree(synthetic, tree_through_mount(root))
    _no_leftovers(out_dir)
