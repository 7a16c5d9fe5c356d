"""SIGTERM and SIGINT at any moment: every command ends within 2 seconds, with
the interrupt status, no thread or child left, and nothing left behind.

The real commands run as processes and are signalled after a spread of
delays (so that the signal lands in start-up, in the stream, in the final
renames, or after the end), at every compression level; a second signal
follows the first in some runs. What must hold whenever the signal lands:

* the process is gone within 2 s of the first signal;
* its status is the interrupt status (130, classic 255), or 0 when the work
  had already finished;
* the destination holds nothing, or exactly the complete result (a signal
  that arrives during the final renames is held until they are done).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import amibundle
from tests.support.bundling import bundle_for
from tests.support.common import Identity, tree, write_image

AMIBUNDLE = Path(sys.executable).parent / "amibundle"
CLASSIC_BUNDLE = Path(sys.executable).parent / "ec2-bundle-image"
MIB = 1 << 20
GRACE = 2.0  # seconds a command may take to end after the first signal

pytestmark = pytest.mark.skipif(not AMIBUNDLE.exists(), reason=f"{AMIBUNDLE} is not installed")


@dataclass(frozen=True)
class Ending:
    status: int
    seconds: float  # from the first signal to the end (0 when it ended before)
    stderr: str


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its handlers in place (Python itself starts
    with the default action; before that no program can clean up)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone already: nothing to wait for
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def signalled(argv: list[str], delay: float, signals: tuple[signal.Signals, ...]) -> Ending:
    """Runs ``argv``, sends ``signals`` (50 ms apart) ``delay`` seconds after
    it handles signals, and measures how long it took to end after the first."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not catches_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.002)
        try:
            proc.wait(delay)
            _, err = proc.communicate()
            return Ending(proc.returncode, 0.0, err)
        except subprocess.TimeoutExpired:
            pass
        sent = time.monotonic()
        for number, sig in enumerate(signals):
            if number:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=GRACE + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{argv[1]} still runs {GRACE + 10} s after being signalled")
        return Ending(proc.returncode, time.monotonic() - sent, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_ending(ending: Ending, *, interrupted: int) -> bool:
    """True when the command was interrupted, False when it had finished."""
    assert "Traceback" not in ending.stderr and "internal error" not in ending.stderr, ending.stderr
    assert ending.seconds <= GRACE, f"ended {ending.seconds:.2f} s after the signal"
    assert ending.status in (interrupted, 0), ending.stderr
    return ending.status == interrupted


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 MiB with holes, random and compressible data: a second or two of
    work at the slow levels, a fraction of one at the fast ones."""
    rnd = random.Random(5)
    text = b"the quick brown fox jumps over the lazy dog\n" * 50_000
    writes = [(i * 6 * MIB, rnd.randbytes(2 * MIB) + text) for i in range(8)]
    return write_image(tmp_path_factory.mktemp("img") / "disk.img", 48 * MIB, writes)


@pytest.fixture(scope="module")
def bundle(
    image: Path, tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity
) -> Path:
    dest = tmp_path_factory.mktemp("bundle")
    result = bundle_for(image, user_id, destination=dest, part_size=4 * MIB,
                        codec=amibundle.Codec(level=1), ec2_cert=ec2_id.cert)  # fmt: skip
    return result.manifest_path


def bundle_argv(tool: Path, image: Path, dest: Path, user: Identity, level: str) -> list[str]:
    compress = ["--compress", "zstd"] if level == "zstd" else ["--compress-level", level]
    command = [str(tool)] if tool == CLASSIC_BUNDLE else [str(tool), "bundle-image"]
    return [
        *command,
        "-i", str(image), "-c", str(user.cert), "-k", str(user.key), "-u", "123456789012",
        "-r", "x86_64", "-d", str(dest), "--batch", "--quiet", "--part-size", str(4 * MIB),
        *compress,
    ]  # fmt: skip


def check_bundle_or_nothing(dest: Path, interrupted: bool, user: Identity) -> None:
    """Nothing, or the complete bundle: a signal during the final renames is
    held until they are done, so an interrupted run may have published."""
    left = tree(dest)
    if interrupted and not left:
        return
    assert not [name for name in left if name.startswith(".")], left
    (manifest,) = dest.glob("*.manifest.xml")
    report = amibundle.verify_bundle(manifest, cert=user.cert)
    assert report.ok, report.problems


# Each level once early in the stream and once later; the delays differ per
# level so that, all together, they cover start-up to the final renames.
CASES = [
    pytest.param(level, delay, signals, id=f"{level}-{delay}s-{'+'.join(s.name for s in signals)}")
    for index, level in enumerate(["1", "2", "3", "4", "5", "6", "7", "8", "9", "zstd"])
    for delay, signals in (
        (0.25 + 0.07 * index, (signal.SIGTERM,)),
        (0.6 + 0.11 * index, (signal.SIGTERM, signal.SIGTERM) if index % 2 else (signal.SIGINT,)),
    )
]


@pytest.mark.parametrize(("level", "delay", "signals"), CASES)
def test_bundle_image_ends_promptly_and_cleanly(
    level: str,
    delay: float,
    signals: tuple[signal.Signals, ...],
    image: Path,
    tmp_path: Path,
    user_id: Identity,
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    ending = signalled(bundle_argv(AMIBUNDLE, image, dest, user_id, level), delay, signals)
    check_bundle_or_nothing(dest, check_ending(ending, interrupted=130), user_id)


@pytest.mark.parametrize("delay", [0.5, 0.9])
def test_classic_bundle_image_ends_with_255(
    delay: float, image: Path, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    argv = bundle_argv(CLASSIC_BUNDLE, image, dest, user_id, "9")
    ending = signalled(argv, delay, (signal.SIGTERM,))
    check_bundle_or_nothing(dest, check_ending(ending, interrupted=255), user_id)


@pytest.mark.parametrize("command", ["unbundle", "verify"])
@pytest.mark.parametrize("delay", [0.3, 0.5, 0.7])
def test_unbundle_and_verify_end_promptly_and_cleanly(
    command: str, delay: float, bundle: Path, image: Path, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "restored"
    dest.mkdir()
    argv = [str(AMIBUNDLE), command, "-m", str(bundle), "-k", str(user_id.key), "--quiet"]
    if command == "unbundle":
        argv += ["-d", str(dest), "--batch"]
    ending = signalled(argv, delay, (signal.SIGTERM, signal.SIGINT))
    interrupted = check_ending(ending, interrupted=130)
    left = tree(dest)
    if interrupted or command == "verify":
        assert left == [], left
    else:
        assert left == [image.name]
        assert (dest / image.name).read_bytes() == image.read_bytes()
