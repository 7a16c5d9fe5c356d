"""The process helper: resolution, environment, error lines, interruption."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from amibundle import tools
from amibundle.errors import AmibundleError


def test_runs_with_c_locale_and_no_stdin() -> None:
    done = tools.run(["sh", "-c", 'echo "$LC_ALL"; cat; echo end'])
    assert done.stdout == "C\nend\n"  # cat read /dev/null: nothing, no wait


def test_input_and_extra_environment(tmp_path: Path) -> None:
    done = tools.run(
        ["sh", "-c", 'cat; echo "$EXTRA"; pwd'], input="in\n", env={"EXTRA": "x"}, cwd=tmp_path
    )
    assert done.stdout == f"in\nx\n{tmp_path}\n"


def test_failure_is_one_line_with_tool_code_and_last_stderr_line() -> None:
    with pytest.raises(tools.ToolError) as caught:
        tools.run(["sh", "-c", "echo first >&2; echo 'mke2fs: no space left' >&2; exit 3"])
    err = caught.value
    assert str(err) == "sh failed (exit 3): mke2fs: no space left"
    assert err.returncode == 3 and "first" in err.stderr_tail
    assert isinstance(err, AmibundleError)


def test_killed_by_signal_is_named() -> None:
    with pytest.raises(tools.ToolError, match=r"sh failed \(killed by SIGKILL\)"):
        tools.run(["sh", "-c", "kill -9 $$"])


def test_no_check_returns_the_status() -> None:
    assert tools.run(["false"], check=False).returncode == 1


def test_missing_tool_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(tools.ToolNotFound) as caught:
        tools.run(["no-such-tool-amibundle"])
    assert str(caught.value) == "no-such-tool-amibundle not found; install no-such-tool-amibundle"
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(tools, "_SBIN", ())
    with pytest.raises(tools.ToolNotFound) as caught:
        tools.which("mke2fs")
    assert str(caught.value) == "mke2fs not found; install e2fsprogs"
    assert caught.value.hint == "e.g. apt-get install e2fsprogs"


def test_sbin_is_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/usr/sbin/mke2fs").exists() and not Path("/sbin/mke2fs").exists():
        pytest.skip("mke2fs is not in sbin here")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert tools.which("mke2fs").endswith("/mke2fs")


def test_ctrl_c_terminates_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        tools.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"])
    pid = int(pid_file.read_text())
    # Terminated and reaped: no process (not even a zombie) is left.
    assert not Path(f"/proc/{pid}").exists()
