"""Fixtures shared by the whole suite: keys, the classic fixtures, EC2's certificate.

Helpers live in :mod:`tests.support`; this file holds fixtures and hooks only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import amibundle
from tests.support.boot import BOOT_TIME
from tests.support.common import CLASSIC, SHARED, SHARED_ABSENT, Identity


@pytest.fixture(scope="session")
def classic() -> Path:
    """The classic-tool fixture bundles (skipped when ../shared is absent)."""
    if not CLASSIC.is_dir():
        pytest.skip(f"{SHARED_ABSENT}: no classic fixtures at {CLASSIC}")
    return CLASSIC


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED_ABSENT}: {SHARED} not found")
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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The boot times of tests/boot (user properties, so that they come back from
    pytest-xdist workers; this conftest is the one the controller loads), and how
    many tests did not run because ../shared is absent."""
    _boot_times(terminalreporter)
    skipped = terminalreporter.stats.get("skipped", [])
    absent = sum(1 for report in skipped if SHARED_ABSENT in str(report.longrepr))
    if absent:
        terminalreporter.write_line(
            f"{absent} test(s) skipped because {SHARED_ABSENT} "
            f"(expected beside the clone at {SHARED})",
            yellow=True,
        )


def _boot_times(terminalreporter: pytest.TerminalReporter) -> None:
    times = [
        (name[len(BOOT_TIME) :], seconds)
        for kind in ("passed", "failed")
        for report in terminalreporter.stats.get(kind, [])
        for name, seconds in getattr(report, "user_properties", [])
        if name.startswith(BOOT_TIME)
    ]
    if times:
        terminalreporter.section("boot times (qemu TCG, firmware to power-off)")
        for name, seconds in sorted(times):
            terminalreporter.write_line(f"{name:<24} {seconds:5.1f} s")
