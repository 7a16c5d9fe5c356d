"""pytest fixtures for tests that run bundle-vol as another user; import them
into a conftest to use them:

    from tests.support.volume_fixtures import out_dir, world_dir  # noqa: F401

* `world_dir` — a folder every user can enter, for the session (pytest's
  tmp_path is 0700 to root, so an unprivileged bundle-vol could not read it).
* `out_dir` — an output folder in it that the unprivileged user can write.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["out_dir", "world_dir"]


@pytest.fixture(scope="session")
def world_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="amibundle-voltest-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def out_dir(world_dir: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="out-", dir=world_dir))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
