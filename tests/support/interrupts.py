"""Running a command as a process and signalling it mid-way (the pattern of
tests/end_to_end/test_signals.py, importable): when the signal lands, how long the process
took to end, its status and what it said."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Ending", "catches_sigterm", "signalled"]


@dataclass(frozen=True)
class Ending:
    status: int
    seconds: float  # from the first signal to the end (0 when it ended before)
    stderr: str


def catches_sigterm(pid: int) -> bool:
    """Whether the process has its handlers in place (before that no program can clean up)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone already: nothing to wait for
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def signalled(
    argv: Sequence[str],
    delay: float,
    signals: Sequence[signal.Signals],
    *,
    env: Mapping[str, str] | None = None,
    ready: Callable[[], bool] | None = None,
    limit: float = 30.0,
) -> Ending:
    """Runs ``argv``, sends ``signals`` (50 ms apart) ``delay`` seconds after it handles
    signals (and, with ``ready``, after ``ready()`` says the moment has come), and
    measures how long it took to end after the first."""
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=None if env is None else dict(env),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + limit
        while not catches_sigterm(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.002)
        while ready is not None and not ready() and proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{argv[0]} never got ready to be signalled")
            time.sleep(0.01)
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
        _, err = proc.communicate(timeout=limit)
        return Ending(proc.returncode, time.monotonic() - sent, err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
