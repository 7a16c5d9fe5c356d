"""Fixtures of the bundle-vol tests: the synthetic volume and output folders.

The volume and the comparisons are in :mod:`tests.support.volumes`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.volumes import SyntheticVolume, build_volume


@pytest.fixture(scope="session")
def world_dir() -> Iterator[Path]:
    """A folder every user can enter (pytest's tmp_path is 0700 to root)."""
    base = Path(tempfile.mkdtemp(prefix="amibundle-voltest-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def synthetic(world_dir: Path) -> SyntheticVolume:
    base = world_dir / "synthetic"
    base.mkdir()
    return build_volume(base)


@pytest.fixture
def out_dir(world_dir: Path) -> Iterator[Path]:
    """An output folder the unprivileged user can write."""
    path = Path(tempfile.mkdtemp(prefix="out-", dir=world_dir))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


