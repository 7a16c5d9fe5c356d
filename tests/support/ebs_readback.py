"""Reading a snapshot back through the EBS direct APIs, as a restore would, and comparing it
with an image without trusting amibundle's own code.

`read_back` lists the blocks (ListSnapshotBlocks, page by page) and fetches each
(GetSnapshotBlock), checking each block's SHA-256 against the checksum EBS returns; with a
`disk` path it writes them into a sparse file of the volume's size (for qemu). `image_blocks`
cuts an image file into 512 KiB blocks independently (plain reads, hashlib), reading only
blocks that meet the image's data (os.SEEK_DATA), so a 16 GiB sparse image costs what its
data costs.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BLOCK", "Snapshot", "image_blocks", "read_back"]

BLOCK = 524_288
GIB = 1 << 30


@dataclass(frozen=True)
class Snapshot:
    volume_gib: int
    blocks: dict[int, bytes]  # every listed block, by index


def read_back(ebs: Any, snapshot_id: str, disk: Path | None = None, *, ec2: Any = None) -> Snapshot:
    """The snapshot's blocks (and, with ``disk``, a sparse file of its volume). With ``ec2``
    it is first looked at with DescribeSnapshots until ``completed`` (EBS lists and reads
    only completed snapshots)."""
    for _ in range(10 if ec2 is not None else 0):
        shown = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
        if shown == "completed":
            break
    blocks: dict[int, bytes] = {}
    token: str | None = None
    volume_gib = 0
    while True:
        page = ebs.list_snapshot_blocks(
            SnapshotId=snapshot_id, MaxResults=1000, **({"NextToken": token} if token else {})
        )
        assert page["BlockSize"] == BLOCK
        volume_gib = int(page["VolumeSize"])
        for entry in page["Blocks"]:
            got = ebs.get_snapshot_block(
                SnapshotId=snapshot_id,
                BlockIndex=entry["BlockIndex"],
                BlockToken=entry["BlockToken"],
            )
            data = got["BlockData"].read()
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            assert (len(data), got["Checksum"]) == (BLOCK, digest), entry["BlockIndex"]
            blocks[int(entry["BlockIndex"])] = data
        token = page.get("NextToken")
        if not token:
            break
    if disk is not None:
        with open(disk, "wb") as handle:
            handle.truncate(volume_gib * GIB)
            for index, data in blocks.items():
                handle.seek(index * BLOCK)
                handle.write(data)
    return Snapshot(volume_gib, blocks)


def _data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    ranges, offset = [], 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, end))
        offset = end
    return ranges


def image_blocks(image: Path, *, shift: int = 0) -> dict[int, bytes]:
    """The image's non-zero 512 KiB blocks, as they sit on a disk where the image starts
    at byte ``shift`` (a multiple of the block size)."""
    assert shift % BLOCK == 0
    found: dict[int, bytes] = {}
    fd = os.open(image, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        ranges = _data_ranges(fd, size)
        for index in sorted({i for a, b in ranges for i in range(a // BLOCK, -(-b // BLOCK))}):
            data = os.pread(fd, BLOCK, index * BLOCK).ljust(BLOCK, b"\0")
            if data.count(0) != BLOCK:
                found[index + shift // BLOCK] = data
    finally:
        os.close(fd)
    return found
