"""Ctrl-C (and SIGTERM) leave nothing behind.

Library level: a Progress whose ``advance`` raises KeyboardInterrupt part way
through bundle_image / unbundle / verify_bundle; the interrupt must propagate,
the destination must be left without a single file (hidden ones included),
and every worker thread must stop.

Process level: the real ``amibundle`` command is sent SIGINT or SIGTERM while
it streams a 300 MiB image; it must exit with 130 and leave the destination
empty.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import amibundle
from amibundle import cli
from amibundle.progress import Stage
from tests.support.bundling import bundle_for
from tests.support.common import Identity, tree

MIB = 1 << 20
DATA = 7 * MIB  # data bytes of the small image
AMIBUNDLE = Path(sys.executable).parent / "amibundle"


class InterruptingProgress:
    """Raises KeyboardInterrupt once ``after`` bytes of a stage are done (at
    the first report when ``after`` is 0)."""

    def __init__(self, stage: Stage, after: int) -> None:
        self.stage = stage
        self.after = after
        self.done = 0
        self.fired = False
        self.finished: list[tuple[Stage, BaseException | None]] = []
        self._lock = threading.Lock()

    def start(self, stage: Stage, total: int | None) -> None:
        pass

    def advance(self, stage: Stage, nbytes: int) -> None:
        if stage is not self.stage:
            return
        with self._lock:
            self.done += nbytes
            if self.done < self.after or self.fired:
                return
            self.fired = True
        self.interrupt()

    def interrupt(self) -> None:
        raise KeyboardInterrupt

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        self.finished.append((stage, error))


class CtrlCProgress(InterruptingProgress):
    """Delivers the interrupt as a real Ctrl-C does: to the main thread,
    whichever thread reports the progress."""

    def interrupt(self) -> None:
        _thread.interrupt_main()


def wait_for_threads(baseline: int, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == baseline, threading.enumerate()


def random_image(path: Path, mib: int) -> Path:
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))
    return path


@dataclass(frozen=True)
class Bundle:
    manifest: Path
    image: Path


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    # Random data (so gzip cannot shrink it away) with a hole in the middle:
    # DATA bytes in all.
    path = random_image(folder / "disk.img", 6)
    with open(path, "r+b") as f:
        f.truncate(12 * MIB)
        f.seek(10 * MIB)
        f.write(os.urandom(MIB))
    return path


@pytest.fixture(scope="module")
def small_bundle(
    small_image: Path, tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity
) -> Bundle:
    dest = tmp_path_factory.mktemp("small-bundle")
    result = bundle_for(
        small_image,
        user_id,
        destination=dest,
        part_size=MIB,
        ec2_cert=ec2_id.cert,
    )
    return Bundle(result.manifest_path, small_image)


# --- library level ---------------------------------------------------------------------


# At the first report, mid-stream, and at the last data byte.
POINTS = [0, 3 * MIB, DATA]


@pytest.mark.parametrize("after", POINTS)
@pytest.mark.parametrize(
    "codec",
    [
        amibundle.Codec(threads=1),
        amibundle.Codec(threads=2),
        amibundle.Codec(compression=amibundle.Compression.ZSTD, threads=2),
    ],
    ids=["gzip-1", "gzip-2", "zstd-2"],
)
def test_interrupted_bundle_leaves_nothing(
    after: int, codec: amibundle.Codec, small_image: Path, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    baseline = threading.active_count()
    progress = InterruptingProgress(Stage.READ, after)
    with pytest.raises(KeyboardInterrupt):
        bundle_for(
            small_image,
            user_id,
            destination=dest,
            part_size=MIB,
            codec=codec,
            progress=progress,
        )
    assert progress.fired
    assert tree(dest) == []
    wait_for_threads(baseline)
    # The stage was closed with the interrupt as its error (a UI can say why).
    assert [(s, type(e)) for s, e in progress.finished] == [(Stage.READ, KeyboardInterrupt)]


def test_interrupted_bundle_with_force_keeps_the_old_bundle(
    small_bundle: Bundle, tmp_path: Path, user_id: Identity
) -> None:
    """--force replaces a bundle only once the new one is complete."""
    dest = small_bundle.manifest.parent
    before = {name: (dest / name).read_bytes() for name in tree(dest)}
    with pytest.raises(KeyboardInterrupt):
        bundle_for(
            small_bundle.image,
            user_id,
            destination=dest,
            part_size=MIB,
            force=True,
            progress=InterruptingProgress(Stage.READ, 3 * MIB),
        )
    assert {name: (dest / name).read_bytes() for name in tree(dest)} == before


@pytest.mark.parametrize("after", POINTS)
def test_interrupted_unbundle_leaves_nothing(
    after: int, small_bundle: Bundle, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "image"
    dest.mkdir()
    baseline = threading.active_count()
    progress = InterruptingProgress(Stage.EXTRACT, after)
    with pytest.raises(KeyboardInterrupt):
        amibundle.unbundle(
            small_bundle.manifest, private_key=user_id.key, destination=dest, progress=progress
        )
    assert progress.fired
    assert tree(dest) == []
    wait_for_threads(baseline)


def test_interrupted_unbundle_over_an_existing_image_keeps_it(
    small_bundle: Bundle, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "image"
    dest.mkdir()
    existing = dest / small_bundle.image.name
    existing.write_bytes(b"the previous image")
    with pytest.raises(KeyboardInterrupt):
        amibundle.unbundle(
            small_bundle.manifest,
            private_key=user_id.key,
            destination=dest,
            force=True,
            progress=InterruptingProgress(Stage.EXTRACT, 3 * MIB),
        )
    assert tree(dest) == [existing.name]
    assert existing.read_bytes() == b"the previous image"


@pytest.mark.parametrize("after", [0, 3 * MIB])
def test_ctrl_c_during_verify_propagates(
    after: int, small_bundle: Bundle, user_id: Identity
) -> None:
    folder = small_bundle.manifest.parent
    before = {name: (folder / name).read_bytes() for name in tree(folder)}
    baseline = threading.active_count()
    progress = CtrlCProgress(Stage.VERIFY, after)
    with pytest.raises(KeyboardInterrupt):
        amibundle.verify_bundle(
            small_bundle.manifest, cert=user_id.cert, private_key=user_id.key, progress=progress
        )
    assert progress.fired
    assert {name: (folder / name).read_bytes() for name in tree(folder)} == before
    wait_for_threads(baseline)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_verify_progress_raising_keyboard_interrupt_propagates(
    small_bundle: Bundle, user_id: Identity
) -> None:
    baseline = threading.active_count()
    progress = InterruptingProgress(Stage.VERIFY, 3 * MIB)
    try:
        report = amibundle.verify_bundle(
            small_bundle.manifest, private_key=user_id.key, progress=progress
        )
    except KeyboardInterrupt:
        wait_for_threads(baseline)
        return
    raise AssertionError(f"the interrupt was lost; verify reported {report.problems}")


# --- process level ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 MiB of random data: several seconds of work at the slowest gzip level."""
    return random_image(tmp_path_factory.mktemp("big") / "big.img", 300)


@pytest.fixture(scope="module")
def big_bundle(
    big_image: Path, tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity
) -> Bundle:
    dest = tmp_path_factory.mktemp("big-bundle")
    result = bundle_for(
        big_image,
        user_id,
        destination=dest,
        ec2_cert=ec2_id.cert,
        codec=amibundle.Codec(level=1),
    )
    return Bundle(result.manifest_path, big_image)


def signal_when(
    argv: list[str], ready: Callable[[], bool], sig: signal.Signals
) -> subprocess.CompletedProcess[str]:
    """Runs ``argv``, sends ``sig`` once ``ready()`` holds, and waits for the end."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while not ready():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(
                    f"finished (status {proc.returncode}) before it could be signalled: {err}"
                )
            if time.monotonic() > deadline:
                pytest.fail("the work never started")
            time.sleep(0.005)
        time.sleep(0.1)  # well into the stream
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def assert_interrupted(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not AMIBUNDLE.exists(), reason=f"{AMIBUNDLE} is not installed")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signalled_bundle_image_exits_130_and_leaves_nothing(
    sig: signal.Signals, big_image: Path, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    argv = [
        str(AMIBUNDLE),
        "bundle-image",
        "-i",
        str(big_image),
        "-c",
        str(user_id.cert),
        "-k",
        str(user_id.key),
        "-u",
        "123456789012",
        "-d",
        str(dest),
        "-r",
        "x86_64",
        "--threads",
        "1",
        "--compress-level",
        "9",
        "--batch",
        "--quiet",
    ]

    def streaming() -> bool:  # the hidden work folder holds a first part
        return any(dest.glob(".amibundle-*.bundle/part.*"))

    assert_interrupted(signal_when(argv, streaming, sig))
    assert tree(dest) == []


@pytest.mark.skipif(not AMIBUNDLE.exists(), reason=f"{AMIBUNDLE} is not installed")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signalled_unbundle_exits_130_and_leaves_nothing(
    sig: signal.Signals, big_bundle: Bundle, tmp_path: Path, user_id: Identity
) -> None:
    dest = tmp_path / "image"
    dest.mkdir()
    argv = [
        str(AMIBUNDLE),
        "unbundle",
        "-m",
        str(big_bundle.manifest),
        "-k",
        str(user_id.key),
        "-d",
        str(dest),
        "--batch",
        "--quiet",
    ]

    def streaming() -> bool:
        return any(dest.glob(".amibundle-*.partial"))

    assert_interrupted(signal_when(argv, streaming, sig))
    assert tree(dest) == []


def test_an_interrupt_that_strikes_inside_a_weakref_callback_is_not_lost() -> None:
    """Python runs a signal handler between any two bytecodes, also inside a
    weakref callback, whose exceptions it only prints ("Exception ignored
    in"): seen once in the signal tests as a traceback on stderr and a
    command that went on to the end. The interrupt must still stop the run."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    printed: list[object] = []
    previous_hook = sys.unraisablehook
    sys.unraisablehook = printed.append
    try:

        class Thing:
            pass

        def struck(_: object) -> None:
            signal.raise_signal(signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside the callback
                pass

        with pytest.raises(KeyboardInterrupt), cli._signal_handlers():
            thing = Thing()
            watcher = weakref.ref(thing, struck)
            del thing  # the callback runs now
            time.sleep(5)  # the interrupt, raised again, strikes here at once
            pytest.fail("the interrupt was lost")
        assert watcher() is None
        assert printed == []  # nothing printed as "Exception ignored"
    finally:
        sys.unraisablehook = previous_hook
        for number, handler in saved.items():
            signal.signal(number, handler)
