"""What the boot tests (tests/boot) share besides the root tree and qemu:
whether they must run, where the kernel is, keys an unprivileged bundle-vol
can read, and the boot times reported at the end of the run.

Under ``make test`` (``AMIBUNDLE_BOOT_TESTS=required``) a missing piece fails
the tests; elsewhere they are skipped, saying how to get the piece.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import amibundle
from tests.support.common import REPO, Identity
from tests.support.volumes import NOBODY

REQUIRED = os.environ.get("AMIBUNDLE_BOOT_TESTS") == "required"
KERNEL_CACHE = Path(os.environ.get("AMIBUNDLE_BOOT_KERNEL_CACHE", REPO / ".cache/boot-kernel"))
# A test records seconds from starting qemu to power-off as a user property
# named BOOT_TIME + variant (they travel with the report, also from pytest-xdist
# workers); the conftest prints them at the end.
BOOT_TIME = "boot-time:"


def need(missing: list[str], how: str) -> None:
    """Skips (or under make test, fails) when something the boot tests need is missing."""
    if not missing:
        return
    message = f"boot tests need {', '.join(missing)}: {how}"
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def cached_kernel() -> Path:
    """The newest kernel fetched by scripts/fetch-boot-kernel.sh."""
    kernels = sorted(KERNEL_CACHE.glob("vmlinuz-*"))
    need(
        [] if kernels else [f"Debian's cloud kernel in {KERNEL_CACHE}"],
        "run make test, or scripts/fetch-boot-kernel.sh",
    )
    return kernels[-1]


@dataclass(frozen=True)
class BootKeys:
    """Keys and certificates bundle-vol can read as an unprivileged user."""

    key: Path
    cert: Path
    ec2_cert: Path


def readable_keys(folder: Path, ec2: Identity) -> BootKeys:
    """A key pair in ``folder`` that nobody can use (the key stays 0600, owned
    by nobody), and EC2's test certificate beside it."""
    folder.mkdir()
    made = amibundle.keygen(folder / "pk.pem", folder / "cert.pem", common_name="boot")
    os.chown(made.private_key, NOBODY, NOBODY)
    ec2_cert = folder / "ec2-cert.pem"
    shutil.copyfile(ec2.cert, ec2_cert)
    for path in (folder, made.certificate, ec2_cert):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return BootKeys(made.private_key, made.certificate, ec2_cert)
