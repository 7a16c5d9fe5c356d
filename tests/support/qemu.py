"""Booting an image under qemu (TCG: no KVM needed) and reading what its init said.

The machine has one NVMe disk (the image, as on EC2's Nitro instances), no
network, 256 MiB, and its serial console in a file. Firmware: SeaBIOS for
legacy BIOS, OVMF (with a private copy of its variable store) for UEFI; a
flat image is started with ``-kernel`` as EC2's PV-GRUB would. The run is
bounded: a machine that has not powered off by the deadline is killed and
the test fails with the end of its console.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.bootroot import REPORT

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
QEMU = "qemu-system-x86_64"
DEADLINE = 60.0  # seconds; a boot takes 3-9 s under TCG on 2 slow cores
# What a machine that will never power off by itself shows: give up at once.
STUCK = ("Kernel panic", "grub rescue>", "Minimal BASH-like line editing")


@dataclass(frozen=True)
class BootRun:
    seconds: float
    console: str
    report: dict[str, list[str]] = field(default_factory=dict)

    def one(self, key: str) -> str:
        values = self.report.get(key, [])
        assert len(values) == 1, f"init said {key!r} {len(values)} times:\n{self.tail()}"
        return values[0]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-lines:])


def missing_pieces(uefi: bool) -> list[str]:
    """What this machine lacks to boot an image (empty: all there)."""
    missing = [] if shutil.which(QEMU) else [f"{QEMU} (qemu-system-x86)"]
    if uefi and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        missing.append(f"{OVMF_CODE} (ovmf)")
    return missing


def boot(
    image: Path,
    work: Path,
    *,
    uefi: bool = False,
    kernel: Path | None = None,
    append: str = "",
    deadline: float = DEADLINE,
) -> BootRun:
    """Boots ``image`` until it powers off; returns the console and init's report."""
    console = work / "console.log"
    argv = [
        QEMU,
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nographic",
        "-serial",
        f"file:{console}",
        "-monitor",
        "none",
        "-no-reboot",
        "-nic",
        "none",
        "-drive",
        f"file={image},if=none,id=disk,format=raw",
        "-device",
        "nvme,drive=disk,serial=amibundle",
        *_firmware(work, uefi),
        *(["-kernel", str(kernel), "-append", append] if kernel else []),
    ]
    started = time.monotonic()
    with open(work / "qemu.err", "wb") as errors:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors)
        try:
            stuck = _wait(process, console, started + deadline)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    seconds = time.monotonic() - started
    run = BootRun(seconds, _read(console), _report(_read(console)))
    problems = (work / "qemu.err").read_text(errors="replace").strip()
    assert stuck is None and process.returncode == 0, (
        f"the machine did not power off ({stuck or f'qemu exit {process.returncode}'}) "
        f"after {seconds:.1f} s {problems}\n{run.tail()}"
    )
    return run


def _wait(process: subprocess.Popen[bytes], console: Path, deadline: float) -> str | None:
    """Waits for qemu to exit; returns why it was given up on, if it was."""
    while time.monotonic() < deadline:
        try:
            process.wait(0.25)
            return None
        except subprocess.TimeoutExpired:
            pass
        text = _read(console)
        for sign in STUCK:
            if sign in text:
                return f"stuck at {sign!r}"
    return "killed at the deadline"


def _read(console: Path) -> str:
    data = console.read_bytes() if console.exists() else b""
    return data.decode("utf-8", "replace").replace("\r", "")


def _firmware(work: Path, uefi: bool) -> Sequence[str]:
    if not uefi:
        return ()  # qemu's default: SeaBIOS
    variables = work / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, variables)
    return (
        "-drive",
        f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,file={variables}",
    )


def _report(console: str) -> dict[str, list[str]]:
    report: dict[str, list[str]] = {}
    for line in console.replace("\r", "").splitlines():
        if line.startswith(REPORT):
            key, _, value = line[len(REPORT) :].partition(" ")
            report.setdefault(key, []).append(value)
    return report
