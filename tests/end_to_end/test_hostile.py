"""Hostile input, class by class (issue 9): every case ends with the right
exit status, one short line (no traceback), and nothing left behind.

The classes, and where each is covered:

* interrupts: tests/end_to_end/test_signals.py (SIGTERM/SIGINT after a
  spread of delays, every compression level, bundle-image, unbundle and
  ``verify -k``) and test_interrupt.py (library level); here what they lack:
  SIGTERM during ``unbundle --force`` over an existing image, SIGTERM and
  ``kill -9`` while a bundle's files are being renamed into place, and the
  next run after a ``kill -9``;
* decompression bombs: 10 GiB inflated from a 10 MB bundle, zeros and
  non-zeros, gzip and zstd, after the archive and inside the member;
* all-or-nothing publishing and crash leftovers;
* every input opened by path being a FIFO, a device, a directory, a socket
  or a symlink to one;
* names longer than the file system allows;
* bounded output (a manifest of 100,000 missing parts is refused; the largest
  accepted one, some 30,000 missing parts, prints 21 problem lines; 1 MiB names);
* memory (sparse extents in the millions, the largest manifest the reader
  accepts), measured on the real command in a child process.

Commands run in-process (``amibundle.cli.main``) unless a case needs a
process of its own (signals, memory). The two-million-extent case runs with
``AMIBUNDLE_EXTREME=1`` (``make fuzz`` sets it); the suite runs 100,000.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import amibundle
from amibundle import pipeline
from amibundle.cli import main
from amibundle.compression import open_decompressor
from amibundle.errors import AmibundleError
from amibundle.format.manifest import MAX_MANIFEST_SIZE
from amibundle.volume.bundle import bundle_volume
from tests.support import tars as tf
from tests.support.bundling import bundle_for
from tests.support.common import Identity, tree, write_image
from tests.support.hostile import (
    MIB,
    bundle_from_stream,
    gzip_stream,
    many_extents_member,
    run_measured,
    zstd_stream,
)

AMIBUNDLE = Path(sys.executable).parent / "amibundle"
GIB = 1 << 30
LINE_LIMIT = 1000  # characters of an error line
MEMORY_LIMIT_MIB = 256
EXTREME = os.environ.get("AMIBUNDLE_EXTREME") == "1"

needs_command = pytest.mark.skipif(not AMIBUNDLE.exists(), reason=f"{AMIBUNDLE} is not installed")


# --------------------------------------------------------------------------- helpers


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def one_line(err: str, *patterns: str) -> str:
    """The one error line of ``err`` (hints aside), short, matching ``patterns``."""
    assert "Traceback" not in err, err[:3000]
    lines = [line for line in err.splitlines() if not line.startswith(("hint:", "Try '"))]
    assert len(lines) == 1, err[:3000]
    assert len(lines[0]) <= LINE_LIMIT, f"{len(lines[0])} characters: {lines[0][:300]}"
    for pattern in patterns:
        assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]
    return lines[0]


def problem_lines(out: str) -> list[str]:
    lines = [line for line in out.splitlines() if line.startswith("PROBLEM:")]
    assert all(len(line) <= LINE_LIMIT + 20 for line in lines), max(map(len, lines))
    return lines


def unbundle_argv(manifest: Path, user: Identity, dest: Path, *extra: str) -> list[str]:
    return ["unbundle", "-m", str(manifest), "-k", str(user.key), "-d", str(dest), "-q", *extra]


def verify_argv(manifest: Path, user: Identity, *extra: str) -> list[str]:
    return ["verify", "-m", str(manifest), "-k", str(user.key), "-q", *extra]


def bundle_argv(image: Path, user: Identity, dest: Path, *extra: str) -> list[str]:
    return [
        "bundle-image", "-i", str(image), "-c", str(user.cert), "-k", str(user.key),
        "-u", "123456789012", "-r", "x86_64", "-d", str(dest), "--batch", "-q", *extra,
    ]  # fmt: skip


def plain_tar(data: bytes, name: str = "disk.img") -> bytes:
    return tf.archive(tf.member(name, data))


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


# =========================================================================== interrupts


@dataclass(frozen=True)
class Ending:
    status: int
    stderr: str
    pid: int


def signal_when(
    argv: list[str], ready: Callable[[], bool], sig: signal.Signals, *, within: float = 30
) -> Ending | None:
    """Runs ``argv`` (a real process), sends ``sig`` as soon as ``ready()``
    holds; None when the command ended before it was ready."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + within
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.communicate()
                return None
            time.sleep(0.001)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=within)
        return Ending(proc.returncode, err, proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def zero_bundle(tmp_path_factory: pytest.TempPathFactory, user_id: Identity) -> Path:
    """A legitimate bundle of a 512 MiB image of zeros stored as data (not
    holes): a 600 KB bundle that takes a second or so to unbundle."""
    size = 512 * MIB
    head = tf.header("disk.img", size=size)
    after = tf.end(len(head) + size)
    digest = hashlib.sha1(head)
    zeros = bytes(MIB)
    for _ in range(size // MIB):
        digest.update(zeros)
    digest.update(after)
    stream = gzip_stream(head, tail_mib=size // MIB, after=after)
    folder = tmp_path_factory.mktemp("zeros")
    return bundle_from_stream(stream, folder, user_id, size=size, digest=digest.hexdigest())


def work_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f".amibundle-*{suffix}"))


@needs_command
def test_sigterm_during_unbundle_force_keeps_the_old_image(
    zero_bundle: Path, dest: Path, user_id: Identity
) -> None:
    """test_interrupt.py does this in-process; here the real command, signalled."""
    old = dest / "disk.img"
    old.write_bytes(b"the previous image")
    argv = [str(AMIBUNDLE), *unbundle_argv(zero_bundle, user_id, dest, "--force", "--batch")]
    ending = signal_when(argv, lambda: bool(work_files(dest, ".partial")), signal.SIGTERM)
    assert ending is not None, "unbundle ended before it started writing"
    assert ending.status == 130, ending.stderr
    one_line(ending.stderr, r"interrupted")
    assert tree(dest) == ["disk.img"]
    assert old.read_bytes() == b"the previous image"


@pytest.fixture(scope="module")
def many_parts_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 MiB of random data: 1,025 parts of 4 KiB, whose renaming into place
    (a journal line and fsync each) takes most of a second."""
    path = tmp_path_factory.mktemp("parts") / "disk.img"
    path.write_bytes(os.urandom(4 * MIB))
    return path


def publishing(dest: Path, journal_bytes: int = 0) -> Callable[[], bool]:
    """True once a run's commit journal exists (the renames have begun) and
    holds at least ``journal_bytes`` (a line of about 30 bytes a rename)."""

    def ready() -> bool:
        for journal in dest.glob(".amibundle-*.bundle/journal"):
            with contextlib.suppress(OSError):
                return journal.stat().st_size >= journal_bytes
        return False

    return ready


def check_whole_bundle(dest: Path, user: Identity, parts: int = 1025) -> None:
    names = tree(dest)
    assert not [name for name in names if name.startswith(".")], names
    assert len(names) == parts + 1, len(names)
    report = amibundle.verify_bundle(dest / "disk.img.manifest.xml", cert=user.cert)
    assert report.ok, report.problems[:3]


def sigterm_while_publishing(image: Path, dest: Path, user: Identity) -> bool:
    """SIGTERM once the renames have begun; the command ends promptly with
    nothing published or all of it. Returns whether it is all."""
    argv = [str(AMIBUNDLE), *bundle_argv(image, user, dest, "--part-size", "4096")]
    started = time.monotonic()
    ending = signal_when(argv, publishing(dest), signal.SIGTERM)
    if ending is None:
        pytest.skip("the renames were over before the test saw them")
    assert time.monotonic() - started < 30
    assert ending.status in (0, 130), ending.stderr
    assert "Traceback" not in ending.stderr
    if not tree(dest):
        return False
    check_whole_bundle(dest, user)
    return True


@needs_command
def test_sigterm_while_publishing_leaves_nothing_or_everything(
    many_parts_image: Path, dest: Path, user_id: Identity
) -> None:
    sigterm_while_publishing(many_parts_image, dest, user_id)


@needs_command
def test_sigterm_while_publishing_is_held_until_the_bundle_is_complete(
    many_parts_image: Path, dest: Path, user_id: Identity
) -> None:
    """What folder.py promises: a signal during the renames waits for them."""
    assert sigterm_while_publishing(many_parts_image, dest, user_id)


@needs_command
def test_kill_9_while_publishing_then_the_next_run_cleans_up(
    many_parts_image: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = bundle_argv(many_parts_image, user_id, dest, "--part-size", "4096")
    # Killed some 60 renames into the 1,026: parts placed, the manifest (last) not.
    ending = signal_when([str(AMIBUNDLE), *argv], publishing(dest, 2000), signal.SIGKILL)
    assert ending is not None, "the renames were over before the test saw them"
    visible = [name for name in tree(dest) if not name.startswith(".")]
    assert visible and "disk.img.manifest.xml" not in visible, len(visible)
    (work,) = work_files(dest, ".bundle")
    assert work.name.startswith(f".amibundle-{ending.pid}-")
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    assert f"left by an interrupted run (process {ending.pid})" in err
    check_whole_bundle(dest, user_id)


@needs_command
def test_kill_9_while_replacing_a_bundle_then_the_old_one_comes_back(
    many_parts_image: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    """--force moves the old bundle aside before placing the new one; after a
    kill -9 in between, the next run puts the old bundle back whole."""
    old_argv = bundle_argv(many_parts_image, user_id, dest, "--part-size", "65536")
    assert run_cli(old_argv, capsys)[0] == 0
    before = {name: (dest / name).read_bytes() for name in tree(dest)}
    argv = bundle_argv(many_parts_image, user_id, dest, "--part-size", "4096", "--force")
    # Killed once the 65 old files are aside and some new parts placed.
    ending = signal_when([str(AMIBUNDLE), *argv], publishing(dest, 4000), signal.SIGKILL)
    assert ending is not None, "the renames were over before the test saw them"
    assert "disk.img.manifest.xml" not in tree(dest)  # moved aside first
    assert len(tree(dest)) > len(before)  # hidden work folder and new parts
    status, _, err = run_cli(old_argv, capsys)  # without --force: recovers, then refuses
    assert status == 1
    assert f"left by an interrupted run (process {ending.pid})" in err
    assert re.search(r"already exists", err), err
    assert {name: (dest / name).read_bytes() for name in tree(dest)} == before


@needs_command
def test_kill_9_while_bundling_leaves_a_work_folder_the_next_run_removes(
    many_parts_image: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = bundle_argv(many_parts_image, user_id, dest, "--part-size", "16384")
    streaming = lambda: any(dest.glob(".amibundle-*.bundle/part.1"))  # noqa: E731
    ending = signal_when([str(AMIBUNDLE), *argv], streaming, signal.SIGKILL)
    assert ending is not None, "bundle-image ended before it wrote a part"
    (work,) = work_files(dest, ".bundle")
    assert work.name.startswith(f".amibundle-{ending.pid}-")
    assert [name for name in tree(dest) if not name.startswith(".")] == []
    status, _, err = run_cli(argv, capsys)
    assert status == 0, err
    assert re.search(rf"removed .*{re.escape(work.name)}.*interrupted run", err), err
    check_whole_bundle(dest, user_id, parts=257)


@needs_command
def test_kill_9_while_unbundling_leaves_a_temp_file_the_next_run_removes(
    zero_bundle: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = unbundle_argv(zero_bundle, user_id, dest, "--batch")
    ending = signal_when(
        [str(AMIBUNDLE), *argv], lambda: bool(work_files(dest, ".partial")), signal.SIGKILL
    )
    assert ending is not None, "unbundle ended before it started writing"
    (partial,) = work_files(dest, ".partial")
    small = bundle_from_stream(
        gzip_stream(plain_tar(b"tiny")), dest.parent / "small", user_id, name="small.img",
        size=4, digest=sha1(plain_tar(b"tiny")),
    )  # fmt: skip
    status, _, err = run_cli(unbundle_argv(small, user_id, dest), capsys)
    assert status == 0, err
    assert f"removed {partial}, left by an interrupted run (process {ending.pid})" in err
    assert tree(dest) == ["small.img"]


def dead_pid() -> int:
    """The id of a process that has just ended."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_dead_runs_journal_is_undone_and_a_live_runs_work_is_kept(
    tmp_path: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal of a run that died while placing parts: what it placed is
    removed (only the very files it placed), what it moved aside comes back;
    the work of a process that still runs is not touched."""
    pid = dead_pid()
    work = dest / f".amibundle-{pid}-x1y2.bundle"
    (work / "old").mkdir(parents=True)
    placed = [dest / "disk.img.part.0", dest / "disk.img.part.1"]
    for path in placed:
        path.write_bytes(b"half published")
    (dest / "unrelated.part").write_bytes(b"same name in the journal, another file")
    (work / "old" / "notes.txt").write_bytes(b"moved aside by the dead run")
    journal = [f"placed {path.stat().st_ino} {path.name}" for path in placed]
    journal += ["placed 1 unrelated.part", "aside 0 notes.txt"]
    (work / "journal").write_text("\n".join(journal) + "\n")
    alive = dest / f".amibundle-{os.getpid()}-live.bundle"
    alive.mkdir()
    image = write_image(tmp_path / "disk.img", 64 * 1024, [(0, os.urandom(5000))])
    status, _, err = run_cli(bundle_argv(image, user_id, dest), capsys)
    assert status == 0, err
    assert f"removed {work}, left by an interrupted run (process {pid})" in err
    assert tree(dest) == sorted(
        [alive.name, "disk.img.manifest.xml", "disk.img.part.0", "notes.txt", "unrelated.part"]
    )
    assert (dest / "notes.txt").read_bytes() == b"moved aside by the dead run"
    assert (dest / "disk.img.part.0").read_bytes() != b"half published"


# =========================================================================== bombs


@dataclass(frozen=True)
class Bomb:
    stream: Callable[[], bytes]
    size: int  # what the manifest says
    error: str  # what the one-line error says


def _honest_head(data: bytes) -> bytes:
    """The header and data of a plain member (no end-of-archive yet)."""
    return tf.header("disk.img", size=len(data)) + tf.pad(data)


_DATA = bytes(range(256)) * 4096  # 1 MiB of non-zero data
_BIG = 10 * GIB
BOMBS = {
    # The archive ends properly, then 10 GiB of zeros: read to EOF they would
    # cost time (the 40 GiB took 30 s) without writing anything.
    "gzip zeros after the archive": Bomb(
        lambda: gzip_stream(_honest_head(_DATA), tail_mib=_BIG // MIB), MIB, r"goes on past"
    ),
    "zstd zeros after the archive": Bomb(
        lambda: zstd_stream(_honest_head(_DATA), tail_mib=_BIG // MIB), MIB, r"goes on past"
    ),
    # The member says 10 GiB, the manifest 1 MiB: refused before a byte is written.
    "non-zero member larger than the manifest": Bomb(
        lambda: gzip_stream(tf.header("disk.img", size=_BIG), tail_mib=_BIG // MIB, fill=0x41),
        MIB,
        r"is 10737418240 bytes but the manifest says 1048576",
    ),
    "zero member larger than the manifest": Bomb(
        lambda: gzip_stream(tf.header("disk.img", size=_BIG), tail_mib=_BIG // MIB),
        MIB,
        r"is 10737418240 bytes but the manifest says 1048576",
    ),
    "PAX size larger than the manifest": Bomb(
        lambda: gzip_stream(
            tf.pax_header([("size", str(_BIG))]) + tf.header("disk.img", magic=tf.POSIX_MAGIC),
            tail_mib=_BIG // MIB,
            fill=0x41,
        ),
        MIB,
        r"is 10737418240 bytes but the manifest says 1048576",
    ),
    # The sparse map covers 1 MiB as the manifest says, but the member claims
    # 10 GiB of stored data after it.
    "sparse member storing more than its map": Bomb(
        lambda: gzip_stream(
            tf.old_gnu_sparse("disk.img", MIB, [(0, 4096)], b"", stored_size=_BIG)[:512],
            tail_mib=_BIG // MIB,
            fill=0x41,
        ),
        MIB,
        r"sparse map holds 4096 bytes of data but the member stores 10737418240",
    ),
}


@pytest.fixture(scope="module")
def bomb_bundles(tmp_path_factory: pytest.TempPathFactory, user_id: Identity) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    return {
        name: bundle_from_stream(
            bomb.stream(), root / f"b{i}", user_id, size=bomb.size, digest="0" * 40
        )
        for i, (name, bomb) in enumerate(BOMBS.items())
    }


class InflationCounter:
    """Counts the bytes the decompressor hands out, whichever thread reads."""

    def __init__(self) -> None:
        self.inflated = 0

    def open(self, kind: Any, source: BinaryIO) -> BinaryIO:
        stream = open_decompressor(kind, source)
        counter = self

        class Counted:
            def read(self, size: int = -1) -> bytes:
                data = stream.read(size)
                counter.inflated += len(data)
                return data

        return Counted()  # type: ignore[return-value]


@pytest.fixture
def inflation(monkeypatch: pytest.MonkeyPatch) -> InflationCounter:
    counter = InflationCounter()
    monkeypatch.setattr(pipeline, "open_decompressor", counter.open)
    return counter


@pytest.mark.parametrize("case", list(BOMBS))
@pytest.mark.parametrize("command", ["unbundle", "verify"])
def test_decompression_bomb_stops_early(
    case: str,
    command: str,
    bomb_bundles: dict[str, Path],
    dest: Path,
    user_id: Identity,
    inflation: InflationCounter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = bomb_bundles[case]
    argv = {
        "unbundle": unbundle_argv(manifest, user_id, dest),
        "verify": verify_argv(manifest, user_id),
    }[command]
    started = time.monotonic()
    status, out, err = run_cli(argv, capsys)
    seconds = time.monotonic() - started
    assert status == 1
    if command == "unbundle":
        one_line(err, BOMBS[case].error)
    else:
        assert any(re.search(BOMBS[case].error, line) for line in problem_lines(out)), out
    assert tree(dest) == []
    # 10 GiB behind the stream; a few MiB of read-ahead at most are inflated.
    assert inflation.inflated <= 16 * MIB, inflation.inflated
    assert seconds < 5, f"{seconds:.1f} s"


@needs_command
def test_ten_gib_zero_bomb_process_figures(
    bomb_bundles: dict[str, Path], dest: Path, user_id: Identity, tmp_path: Path
) -> None:
    """The issue's case as a process: time, CPU and memory, and nothing written."""
    manifest = bomb_bundles["gzip zeros after the archive"]
    bundle_bytes = sum(p.stat().st_size for p in manifest.parent.iterdir())
    argv = [str(AMIBUNDLE), *unbundle_argv(manifest, user_id, dest)]
    run = run_measured(argv, tmp_path / "figures", timeout=60)
    print(f"10 GiB zero bomb in a {bundle_bytes / MIB:.1f} MiB bundle: {run}")
    assert run.status == 1, run.stderr
    one_line(run.stderr, r"goes on past")
    assert tree(dest) == []
    # Wall time includes start-up on a loaded machine; CPU time is the work done.
    assert run.cpu_seconds < 3 and run.seconds < 15 and run.peak_rss_mib <= MEMORY_LIMIT_MIB


# =========================================================================== special files

KINDS = {
    # kind: the word its error must use (the CLI's own check says "not a regular file")
    "fifo": "a FIFO",
    "socket": "a socket",
    "directory": "a directory",
    "dev-zero": "a character device",
    "dev-null": "a character device",
    "link-fifo": "a FIFO",
    "link-socket": "a socket",
    "link-directory": "a directory",
    "link-dev-zero": "a character device",
    "link-dev-null": "a character device",
}

class SpecialFiles:
    """Makes FIFOs, sockets, directories, devices and symlinks to them; on
    close, opens every FIFO for writing once, so that a reader stuck on one
    (the bug this guards against) is released instead of hanging the suite."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.fifos: list[Path] = []
        self.sockets: list[socket.socket] = []

    def make(self, kind: str, path: Path) -> Path:
        if kind.startswith("link-"):
            target = self.make(kind[5:], self.scratch / f"target-{path.name}")
            path.symlink_to(target)
        elif kind == "fifo":
            os.mkfifo(path)
            self.fifos.append(path)
        elif kind == "socket":
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(path))
            listener.listen()
            self.sockets.append(listener)
        elif kind == "directory":
            path.mkdir()
        else:
            device = {"dev-zero": "/dev/zero", "dev-null": "/dev/null"}[kind]
            try:
                os.mknod(path, stat.S_IFCHR | 0o600, Path(device).stat().st_rdev)
            except PermissionError:  # not root: the device itself
                return Path(device)
        return path

    def close(self) -> None:
        for fifo in self.fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        for listener in self.sockets:
            listener.close()


@pytest.fixture
def special(tmp_path: Path) -> Iterator[SpecialFiles]:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    files = SpecialFiles(scratch)
    try:
        yield files
    finally:
        files.close()


@pytest.fixture(scope="module")
def good_bundle(
    tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity
) -> Path:
    folder = tmp_path_factory.mktemp("good")
    image = write_image(folder / "disk.img", 2 * MIB, [(4096, os.urandom(300_000))])
    out = folder / "bundle"
    out.mkdir()
    result = bundle_for(image, user_id, destination=out, part_size=100_000, ec2_cert=ec2_id.cert)
    return result.manifest_path


@pytest.fixture
def bundle_copy(good_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(good_bundle.parent, copy)
    return copy / good_bundle.name


def _volume(tmp_path: Path) -> Path:
    volume = tmp_path / "volume"
    (volume / "etc").mkdir(parents=True, exist_ok=True)
    (volume / "etc" / "hostname").write_text("test\n")
    return volume


CLI_INPUTS = [
    ("unbundle", "manifest"), ("unbundle", "key"), ("unbundle", "cert"), ("unbundle", "part"),
    ("verify", "manifest"), ("verify", "key"), ("verify", "cert"), ("verify", "part"),
    ("bundle-image", "image"), ("bundle-image", "key"), ("bundle-image", "cert"),
    ("bundle-image", "ec2cert"), ("bundle-vol", "script"), ("bundle-vol", "fstab"),
]  # fmt: skip


def cli_argv(
    command: str, what: str, path: Path, manifest: Path, user: Identity, dest: Path
) -> list[str]:
    """``command`` with ``path`` as its input ``what`` (a part is found by the manifest)."""
    if command == "bundle-vol":
        option = {"script": "-S", "fstab": "--fstab"}[what]
        volume = _volume(dest.parent)
        return ["bundle-vol", "-v", str(volume), "-d", str(dest), "--clone-only", option, str(path)]
    if command == "bundle-image":
        image = path if what == "image" else manifest.parent / "disk.img.part.0"
        keys = {"cert": user.cert, "key": user.key, what: path}
        argv = bundle_argv(image, Identity(keys["key"], keys["cert"]), dest)
        return [*argv, "--ec2cert", str(path)] if what == "ec2cert" else argv
    keys = {"cert": None, "key": user.key, what: path}
    argv = [command, "-m", str(path if what == "manifest" else manifest), "-k", str(keys["key"])]
    argv += ["-d", str(dest)] if command == "unbundle" else []
    cert = {"unbundle": "--cert", "verify": "-c"}[command]  # unbundle has no -c
    return argv + ([cert, str(keys["cert"])] if keys["cert"] else [])


def _place(kind: str, what: str, special: SpecialFiles, manifest: Path) -> Path:
    if what == "part":
        part = manifest.parent / "disk.img.part.1"
        part.unlink()
        return special.make(kind, part)
    return special.make(kind, special.scratch / f"special-{what}")


CLI_CASES = [
    pytest.param(
        command,
        what,
        kind,
        id=f"{command}-{what}-{kind}",

    )
    for command, what in CLI_INPUTS
    for kind in KINDS
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("command", "what", "kind"), CLI_CASES)
def test_special_file_as_input_on_the_command_line(
    command: str,
    what: str,
    kind: str,
    special: SpecialFiles,
    bundle_copy: Path,
    dest: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _place(kind, what, special, bundle_copy)
    argv = cli_argv(command, what, path, bundle_copy, user_id, dest)
    started = time.monotonic()
    status, out, err = run_cli(argv, capsys)
    assert time.monotonic() - started < 10
    if what != "part":  # the option's own check: a usage error, at once
        assert status == 2
        one_line(err, r"not a regular file|not executable")
    elif command == "verify":
        assert status == 1
        assert any(KINDS[kind] in line for line in problem_lines(out)), out
    else:
        assert status == 1
        one_line(err, rf"disk\.img\.part\.1 is {KINDS[kind]}")
    assert tree(dest) == []


def _library_call(what: str, path: Path, manifest: Path, user: Identity, dest: Path) -> object:
    if what == "manifest":
        return amibundle.unbundle(path, private_key=user.key, destination=dest)
    if what in ("key", "part"):
        key = path if what == "key" else user.key
        return amibundle.unbundle(manifest, private_key=key, destination=dest)
    if what == "cert":
        return amibundle.unbundle(manifest, private_key=user.key, destination=dest, cert=path)
    if what == "image":
        return bundle_for(path, user, destination=dest)
    volume = _volume(dest.parent)
    return bundle_volume(
        volume, metadata=None, keys=None, destination=dest, partition="none", **{what: path}
    )


LIBRARY_INPUTS = ["manifest", "key", "cert", "part", "image", "script", "fstab"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "kind", KINDS
)
@pytest.mark.parametrize("what", LIBRARY_INPUTS)
def test_special_file_as_input_to_the_library(
    what: str,
    kind: str,
    special: SpecialFiles,
    bundle_copy: Path,
    dest: Path,
    user_id: Identity,
) -> None:
    """Below the command line's own check: the library opens every input
    without blocking and says what it is."""
    path = _place(kind, what, special, bundle_copy)
    started = time.monotonic()
    with pytest.raises(AmibundleError) as caught:
        _library_call(what, path, bundle_copy, user_id, dest)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "\n" not in message and len(message) <= LINE_LIMIT
    assert f"is {KINDS[kind]}" in message, message
    assert tree(dest) == []


# =========================================================================== names


def _named_bundle(
    folder: Path, user: Identity, *, name: str, part_names: list[str] | None = None
) -> Path:
    tar = plain_tar(b"data" * 100)
    return bundle_from_stream(
        gzip_stream(tar), folder, user, name=name, size=400, digest=sha1(tar),
        part_names=part_names or ["short.part.0"], manifest_name="short.manifest.xml",
        write_parts=part_names is None,
    )  # fmt: skip


NAME_CASES = {
    # case: (image name, part names or None, what the error says)
    "300-byte image name": ("n" * 300, None, r"image name 'n{20}.*is 300 bytes long"),
    "1 MiB image name": ("n" * MIB, None, r"image name 'n{20}.*\(1048578 characters\).*is 1048576"),
    "300-byte part name": ("disk.img", ["p" * 300], r"part 'p{20}.*is 300 bytes long"),
}


@pytest.mark.parametrize("case", list(NAME_CASES))
def test_name_longer_than_the_file_system_allows(
    case: str, tmp_path: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    name, parts, error = NAME_CASES[case]
    manifest = _named_bundle(tmp_path / "bundle", user_id, name=name, part_names=parts)
    status, _, err = run_cli(unbundle_argv(manifest, user_id, dest), capsys)
    assert status == 1
    one_line(err, error)
    assert tree(dest) == []
    # verify finds it too: such a bundle cannot be unbundled, so it is not intact.
    status, out, _ = run_cli(["verify", "-m", str(manifest)], capsys)
    assert status == 1
    assert any(re.search(error, line) for line in problem_lines(out)), out[:2000]
    assert "OK" not in out


def test_path_longer_than_the_file_system_allows(
    tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path.joinpath(*["d" * 200] * ((3900 - len(str(tmp_path))) // 201))
    deep.mkdir(parents=True)
    manifest = _named_bundle(tmp_path / "bundle", user_id, name="n" * 250)
    status, _, err = run_cli(unbundle_argv(manifest, user_id, deep), capsys)
    assert status == 1
    assert tree(deep) == []
    assert "makes a path longer than the 4096 bytes" in err
    one_line(err, r"makes a path longer than the 4096 bytes")


def test_long_bundle_prefix_is_refused(
    tmp_path: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    image = write_image(tmp_path / "disk.img", 4096, [(0, b"x")])
    status, _, err = run_cli(bundle_argv(image, user_id, dest, "-p", "p" * 300), capsys)
    assert status == 2
    one_line(err, r"--prefix is too long")
    assert tree(dest) == []


_HUGE = "m" * (MIB - 1)  # the longest name a GNU LongLink header may carry
TAR_NAME_CASES = {
    # case: (tar stream, exit status, what stderr says)
    "1 MiB member name": (
        tf.archive(tf.long_name(_HUGE), tf.member("m" * 100, b"data" * 100)),
        0,
        r"WARNING: the image inside the bundle is named 'm{20}.*\(1048577 characters\)",
    ),
    "1 MiB member name with a slash": (
        tf.archive(tf.long_name(_HUGE[:1000] + "/" + _HUGE[1001:]), tf.member("x", b"d" * 400)),
        1,
        r"contains '/'",
    ),
    "1 MiB PAX path of a device": (
        tf.archive(
            tf.pax_header([("path", _HUGE[: MIB - 30])]),
            tf.member("x", typeflag=b"3", magic=tf.POSIX_MAGIC),
        ),
        1,
        r"is a character device",
    ),
}


@pytest.mark.parametrize("case", list(TAR_NAME_CASES))
def test_huge_tar_member_name_is_shortened(
    case: str, tmp_path: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    tar, expected, pattern = TAR_NAME_CASES[case]
    manifest = bundle_from_stream(
        gzip_stream(tar), tmp_path / "bundle", user_id, size=400, digest=sha1(tar)
    )
    status, _, err = run_cli(unbundle_argv(manifest, user_id, dest), capsys)
    assert status == expected, err[:500]
    one_line(err, pattern)
    assert tree(dest) == (["disk.img"] if expected == 0 else [])


# =========================================================================== output and memory


def _missing_parts_bundle(folder: Path, user: Identity, count: int) -> Path:
    return bundle_from_stream(
        gzip_stream(plain_tar(b"x")), folder, user, size=1, digest="0" * 40,
        part_count=count, write_parts=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def largest_manifest(tmp_path_factory: pytest.TempPathFactory, user_id: Identity) -> Path:
    """As many parts as fit in the largest manifest the reader accepts (just
    under MAX_MANIFEST_SIZE), none of them present."""
    probe = [
        _missing_parts_bundle(tmp_path_factory.mktemp("probe"), user_id, n).stat().st_size
        for n in (10_000, 11_000)
    ]
    per_part = (probe[1] - probe[0]) / 1000
    count = int((MAX_MANIFEST_SIZE - probe[0]) / per_part * 0.995) + 10_000
    manifest = _missing_parts_bundle(tmp_path_factory.mktemp("largest"), user_id, count)
    assert MAX_MANIFEST_SIZE * 0.99 < manifest.stat().st_size <= MAX_MANIFEST_SIZE
    return manifest


def parts_of(manifest: Path) -> int:
    return manifest.read_bytes().count(b"<part index=")


@needs_command
def test_verify_output_is_bounded_and_json_lists_everything(
    largest_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    count = parts_of(largest_manifest)
    run = run_measured(
        [str(AMIBUNDLE), "verify", "-m", str(largest_manifest)], tmp_path / "figures", timeout=120
    )
    assert run.status == 1, run.stderr
    lines = run.stdout.splitlines()
    problems = problem_lines(run.stdout)
    assert len(problems) == 21, problems[:3]
    assert problems[-1] == (
        f"PROBLEM: ... and {count - 20} more of this kind (missing part); --json lists all"
    )
    assert lines[-1] == f"FAILED: {count} problems"
    assert len(lines) <= 25
    assert run.peak_rss_mib <= MEMORY_LIMIT_MIB
    status, out, _ = run_cli(["verify", "-m", str(largest_manifest), "--json"], capsys)
    assert status == 1
    report = json.loads(out)
    assert len(report["problems"]) == count and report["ok"] is False
    print(f"verify of {count} missing parts ({largest_manifest.stat().st_size} bytes): {run}")


@needs_command
def test_unbundle_of_the_largest_manifest_stays_small(
    largest_manifest: Path, dest: Path, user_id: Identity, tmp_path: Path
) -> None:
    argv = [str(AMIBUNDLE), *unbundle_argv(largest_manifest, user_id, dest)]
    run = run_measured(argv, tmp_path / "figures", timeout=120)
    print(f"unbundle of the largest manifest: {run}")
    assert run.status == 1
    one_line(run.stderr, r"part disk\.img\.part\.0+ is missing")
    assert tree(dest) == []
    assert run.peak_rss_mib <= MEMORY_LIMIT_MIB


@needs_command
def test_a_manifest_of_100000_parts_is_refused_at_once(
    tmp_path: Path, dest: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000 parts make a 14 MB manifest, past the reader's limit: refused
    before it is parsed, by verify as by unbundle, in bounded memory."""
    manifest = _missing_parts_bundle(tmp_path / "bundle", user_id, 100_000)
    run = run_measured(
        [str(AMIBUNDLE), "verify", "-m", str(manifest)], tmp_path / "figures", timeout=60
    )
    assert run.status == 1
    (problem,) = problem_lines(run.stdout)
    assert re.search(rf"more than the {MAX_MANIFEST_SIZE}|larger than", problem), problem
    assert run.peak_rss_mib <= MEMORY_LIMIT_MIB
    status, _, err = run_cli(unbundle_argv(manifest, user_id, dest), capsys)
    assert status == 1
    one_line(err, r"larger than|more than")
    assert tree(dest) == []
    print(f"verify of a {manifest.stat().st_size} byte manifest: {run}")


@pytest.fixture(scope="module")
def sparse_bundles(tmp_path_factory: pytest.TempPathFactory, user_id: Identity) -> Any:
    made: dict[int, Path] = {}

    def bundle(count: int) -> Path:
        if count not in made:
            tar, real_size = many_extents_member("disk.img", count)
            made[count] = bundle_from_stream(
                gzip_stream(tar), tmp_path_factory.mktemp(f"sparse{count}"), user_id,
                size=real_size, digest=sha1(tar),
            )  # fmt: skip
        return made[count]

    return bundle


@needs_command
@pytest.mark.parametrize(
    "count",
    [
        100_000,
        pytest.param(
            2_000_000,
            id="extreme-2000000",
            marks=pytest.mark.skipif(not EXTREME, reason="AMIBUNDLE_EXTREME=1 (make fuzz)"),
        ),
    ],
)
@pytest.mark.parametrize("command", ["unbundle", "verify"])
@pytest.mark.timeout(900)
def test_millions_of_sparse_extents_stay_in_memory_bounds(
    command: str, count: int, sparse_bundles: Any, dest: Path, user_id: Identity, tmp_path: Path
) -> None:
    manifest = sparse_bundles(count)
    argv = {
        "unbundle": unbundle_argv(manifest, user_id, dest),
        "verify": verify_argv(manifest, user_id),
    }[command]
    run = run_measured([str(AMIBUNDLE), *argv], tmp_path / "figures", timeout=840)
    print(f"{command} of {count} sparse extents: {run}")
    assert run.status == 0, run.stderr
    assert run.peak_rss_mib <= MEMORY_LIMIT_MIB
    if command == "unbundle":
        image = dest / "disk.img"
        assert image.stat().st_size == count * 4096
        with image.open("rb") as f:
            for index in (0, count // 2, count - 1):
                f.seek(index * 4096)
                assert f.read(2) == b"\x5a\0"
