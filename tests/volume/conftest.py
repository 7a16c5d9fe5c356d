"""Fixtures of the bundle-vol tests: the synthetic volume and output folders.

The volume and the comparisons are in :mod:`tests.support.volumes`; the
folders an unprivileged bundle-vol can use in :mod:`tests.support.volume_fixtures`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.volume_fixtures import out_dir, world_dir  # noqa: F401
from tests.support.volumes import SyntheticVolume, build_volume


@pytest.fixture(scope="session")
def synthetic(world_dir: Path) -> SyntheticVolume:  # noqa: F811
    base = world_dir / "synthetic"
    base.mkdir()
    return build_volume(base)
