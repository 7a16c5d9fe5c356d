"""Helpers the whole suite shares: where things are, test identities, sample images."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CLASSIC = SHARED / "fixtures" / "classic-1.5.3"
# Tests that read ../shared skip with a reason that starts with this, so the
# suite's summary can count them (see conftest.py).
SHARED_ABSENT = "../shared is absent"


@dataclass(frozen=True)
class Identity:
    key: Path
    cert: Path


def write_image(path: Path, size: int, writes: Iterable[tuple[int, bytes]] = ()) -> Path:
    """A sparse file of ``size`` bytes with ``writes`` (offset, data) applied."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
    return path


def sample_image(path: Path, mib: int = 8) -> Path:
    """A sparse image with a hole at the start, random and compressible data,
    a run of written zeros, and a hole at the end."""
    rnd = os.urandom
    text = b"the quick brown fox jumps over the lazy dog\n" * 20000
    return write_image(
        path,
        mib << 20,
        [(1 << 20, rnd(300_000)), (2 << 20, text), (3 << 20, bytes(1 << 20)), (4 << 20, rnd(5000))],
    )


def tree(folder: Path) -> list[str]:
    """Every name below ``folder``, hidden ones included (for no-leftovers checks)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
