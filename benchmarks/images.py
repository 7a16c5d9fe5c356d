"""The benchmark's images, built once into benchmarks/work/ and reused.

* realistic.img: ext4, 3 GiB apparent, holding at least 1 GiB of real files
  (binaries, libraries, text) copied from /usr, made with ``mke2fs -d``;
* sparse.img: ext4, 16 GiB apparent, holding about 512 MiB of the same files;
* dense.img: sparse.img's data regions written back to back: 512 MiB-ish of
  the same bytes with no holes at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from amibundle.sparse import data_extents

WORK = Path(__file__).resolve().parent / "work"
SOURCES = [Path("/usr/lib"), Path("/usr/share"), Path("/usr/bin"), Path("/usr/local")]
MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Image:
    name: str
    path: Path
    description: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def data_bytes(self) -> int:
        return data_bytes(self.path)


def extents(path: Path) -> list[tuple[int, int]]:
    """(start, end) of the file's data regions, from amibundle's own walk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(e.offset, e.offset + e.length) for e in data_extents(fd, os.fstat(fd).st_size)]
    finally:
        os.close(fd)


def data_bytes(path: Path) -> int:
    """Bytes in the file's data extents (what a sparse-aware reader reads)."""
    return sum(end - start for start, end in extents(path))


def copy_tree(target: Path, limit: int) -> int:
    """Copies regular files from SOURCES into target until ``limit`` bytes."""
    copied = 0
    target.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                try:
                    if path.is_symlink() or not path.is_file():
                        continue
                    size = path.stat().st_size
                    if copied + size > limit:
                        return copied
                    dest = target / path.relative_to("/")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, dest)
                except OSError:
                    continue
                copied += size
    return copied


def mke2fs(image: Path, tree: Path, size: int) -> None:
    binary = shutil.which("mke2fs") or "/sbin/mke2fs"
    image.unlink(missing_ok=True)
    subprocess.run(
        [binary, "-q", "-t", "ext4", "-d", str(tree), "-F", str(image), f"{size // MiB}M"],
        check=True,
    )


def densify(source: Path, target: Path) -> None:
    """Writes the data regions of ``source`` back to back into ``target``."""
    fd = os.open(source, os.O_RDONLY)
    try:
        with open(target, "wb") as out:
            for start, end in extents(source):
                for chunk in range(start, end, 8 * MiB):
                    out.write(os.pread(fd, min(8 * MiB, end - chunk), chunk))
    finally:
        os.close(fd)


def realistic(log: callable = print) -> Image:  # type: ignore[valid-type]
    """The realistic image alone (what bench-ebs needs), built if missing."""
    WORK.mkdir(exist_ok=True)
    image = Image(
        "realistic", WORK / "realistic.img", "ext4, 3 GiB apparent, >= 1 GiB of files from /usr"
    )
    if not image.path.exists():
        log("building realistic.img (copying ~1.1 GiB of files from /usr) ...")
        tree = WORK / "tree-large"
        copied = copy_tree(tree, int(1.1 * GiB))
        mke2fs(image.path, tree, 3 * GiB)
        shutil.rmtree(tree)
        log(f"  {copied / MiB:.0f} MiB of files")
    return image


def build(log: callable = print) -> dict[str, Image]:  # type: ignore[valid-type]
    WORK.mkdir(exist_ok=True)
    images = {
        "realistic": realistic(log),
        "sparse": Image(
            "sparse", WORK / "sparse.img", "ext4, 16 GiB apparent, ~512 MiB of the same files"
        ),
        "dense": Image("dense", WORK / "dense.img", "sparse.img's data back to back, no holes"),
    }
    if not images["sparse"].path.exists():
        log("building sparse.img (16 GiB apparent, ~512 MiB of files) ...")
        tree = WORK / "tree-small"
        copy_tree(tree, 525 * MiB)
        mke2fs(images["sparse"].path, tree, 16 * GiB)
        shutil.rmtree(tree)
    if not images["dense"].path.exists():
        log("building dense.img ...")
        densify(images["sparse"].path, images["dense"].path)
    return images


if __name__ == "__main__":
    for image in build().values():
        print(
            f"{image.name}: {image.size / MiB:.0f} MiB apparent, "
            f"{image.data_bytes / MiB:.0f} MiB of data"
        )
