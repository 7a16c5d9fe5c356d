"""Fixtures of the boot tests: the kernel from the cache, the root tree (built
once per session), keys an unprivileged bundle-vol can read; the boot times
at the end of the run; the AWS stand-in, for the disk to-ebs writes into a
snapshot. Helpers are in :mod:`tests.support.boot`,
:mod:`tests.support.bootroot` and :mod:`tests.support.qemu`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.aws_fixtures import aws, aws_proxy, aws_session  # noqa: F401
from tests.support.boot import BootKeys, cached_kernel, need, readable_keys
from tests.support.bootroot import RootTree, build_root, is_static_elf
from tests.support.common import Identity
from tests.support.volume_fixtures import out_dir, world_dir  # noqa: F401


@pytest.fixture(scope="session")
def boot_kernel() -> Path:
    return cached_kernel()


@pytest.fixture(scope="session")
def root_tree(world_dir: Path, boot_kernel: Path) -> RootTree:  # noqa: F811
    found = shutil.which("busybox")
    static = found is not None and is_static_elf(Path(found))
    need([] if static else ["a static busybox"], "apt-get install busybox-static")
    need([] if os.geteuid() == 0 else ["root"], "the tree holds files of other owners")
    assert found is not None
    return build_root(world_dir, Path(found), boot_kernel)


@pytest.fixture(scope="session")
def boot_keys(world_dir: Path, ec2_id: Identity) -> BootKeys:  # noqa: F811
    return readable_keys(world_dir / "boot-keys", ec2_id)
