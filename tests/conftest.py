"""Fixtures shared by the whole suite: keys, sample images, the classic fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

import amibundle

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CLASSIC = SHARED / "fixtures" / "classic-1.5.3"


@dataclass(frozen=True)
class Identity:
    key: Path
    cert: Path


@pytest.fixture(scope="session")
def classic() -> Path:
    """The classic-tool fixture bundles (skipped when ../shared is absent)."""
    if not CLASSIC.is_dir():
        pytest.skip(f"classic fixtures not found at {CLASSIC} (../shared is absent)")
    return CLASSIC


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    return SHARED


def _identity(folder: Path, name: str) -> Identity:
    folder.mkdir(parents=True, exist_ok=True)
    result = amibundle.keygen(
        folder / f"{name}-pk.pem", folder / f"{name}-cert.pem", common_name=name
    )
    return Identity(result.private_key, result.certificate)


@pytest.fixture(scope="session")
def user_id(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return _identity(tmp_path_factory.mktemp("keys"), "user")


@pytest.fixture(scope="session")
def ec2_id(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return _identity(tmp_path_factory.mktemp("keys"), "ec2")


@pytest.fixture(scope="session")
def other_id(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return _identity(tmp_path_factory.mktemp("keys"), "other")


@pytest.fixture(autouse=True)
def _ec2_cert_env(monkeypatch: pytest.MonkeyPatch, ec2_id: Identity) -> None:
    """Bundles made in tests wrap the EC2 key for the test EC2 identity, so
    no test depends on where (or whether) real EC2 certificates are installed."""
    monkeypatch.setenv("AMIBUNDLE_EC2_CERT", str(ec2_id.cert))
    for var in ("EC2_AMITOOL_HOME", "EC2_HOME", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)


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
