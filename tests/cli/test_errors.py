"""Exit codes and messages of amibundle.cli._errors (classic-cli.md §1.5-§1.6), and the
tqdm progress adapter of amibundle.cli._progress."""

from __future__ import annotations

import argparse
import io
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from amibundle.cli._errors import (
    CLASSIC_EXIT,
    MODERN_EXIT,
    exit_code_for,
    run_cli,
    run_command,
)
from amibundle.cli._options import EarlyExit, OptionParser, Style, add_common_options, mandatory
from amibundle.cli._progress import TqdmProgress
from amibundle.cli._values import existing_file
from amibundle.errors import (
    DeclinedError,
    IntegrityError,
    LocationMismatchError,
    ManifestError,
    MetadataUnavailable,
    PromptTimeout,
    S3Error,
    UsageError,
)
from amibundle.progress import BatchedProgress, Stage

MODERN, CLASSIC = Style.MODERN, Style.CLASSIC


def raiser(error: BaseException) -> Callable[[], int | None]:
    def func() -> int | None:
        raise error

    return func


# -- the exit code tables -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "modern", "classic"),
    [
        pytest.param(UsageError("bad"), 2, 1, id="usage"),
        pytest.param(ManifestError("bad"), 1, 254, id="manifest"),
        pytest.param(IntegrityError("bad"), 1, 254, id="integrity"),
        pytest.param(LocationMismatchError("x"), 1, 10, id="explicit-classic-code"),
        pytest.param(S3Error("x"), 1, 3, id="s3"),
        pytest.param(MetadataUnavailable("x"), 1, 12, id="metadata"),
        pytest.param(PromptTimeout("x"), 1, 5, id="prompt-timeout"),
        pytest.param(DeclinedError("x"), 8, 8, id="declined"),
        pytest.param(KeyboardInterrupt(), 130, 255, id="ctrl-c"),
        pytest.param(ValueError("oops"), 1, 1, id="internal"),
    ],
)
def test_exit_code_tables(error: BaseException, modern: int, classic: int) -> None:
    assert exit_code_for(error, MODERN) == modern
    assert exit_code_for(error, CLASSIC) == classic
    # run_command agrees with the table
    assert run_command(raiser(error), prog="p", style=MODERN, debug=False) == modern
    assert run_command(raiser(error), prog="p", style=CLASSIC, debug=False) == classic


def test_tables_match_the_spec() -> None:
    assert (CLASSIC_EXIT.success, CLASSIC_EXIT.usage, CLASSIC_EXIT.failure) == (0, 1, 254)
    assert (CLASSIC_EXIT.interrupted, MODERN_EXIT.interrupted) == (255, 130)
    assert (MODERN_EXIT.usage, MODERN_EXIT.failure, MODERN_EXIT.internal) == (2, 1, 1)


@pytest.mark.parametrize("style", list(Style), ids=lambda s: s.value)
@pytest.mark.parametrize(("returned", "status"), [(None, 0), (0, 0), (5, 5)])
def test_returned_status_passes_through(style: Style, returned: int | None, status: int) -> None:
    assert run_command(lambda: returned, prog="p", style=style, debug=False) == status


# -- what is printed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "error", "lines"),
    [
        pytest.param(
            CLASSIC,
            ManifestError("manifest is not XML"),
            ["ERROR: manifest is not XML"],
            id="classic-error",
        ),
        pytest.param(
            MODERN,
            ManifestError("manifest is not XML"),
            ["tool: error: manifest is not XML"],
            id="modern-error",
        ),
        pytest.param(
            CLASSIC,
            IntegrityError("digest mismatch", hint="re-download part 3"),
            ["ERROR: digest mismatch", "hint: re-download part 3"],
            id="classic-hint",
        ),
        pytest.param(
            MODERN,
            IntegrityError("digest mismatch", hint="re-download part 3"),
            ["tool: error: digest mismatch", "hint: re-download part 3"],
            id="modern-hint",
        ),
        pytest.param(
            CLASSIC,
            UsageError("missing mandatory option --cert"),
            ["ERROR: missing mandatory option --cert", "Try 'tool --help'."],
            id="classic-usage",
        ),
        pytest.param(
            MODERN,
            UsageError("bad -u", hint="an access key id is not an account"),
            [
                "tool: error: bad -u",
                "hint: an access key id is not an account",
                "Try 'tool --help'.",
            ],
            id="modern-usage-hint",
        ),
        pytest.param(
            CLASSIC,
            ManifestError("line one\nline two"),
            ["ERROR: line one line two"],
            id="folded-to-one-line",
        ),
        pytest.param(CLASSIC, KeyboardInterrupt(), ["tool: interrupted"], id="classic-ctrl-c"),
        pytest.param(MODERN, KeyboardInterrupt(), ["tool: interrupted"], id="modern-ctrl-c"),
        pytest.param(
            CLASSIC,
            ZeroDivisionError("division by zero"),
            [
                "ERROR: internal error: ZeroDivisionError: division by zero "
                "(rerun with --debug for a traceback)"
            ],
            id="classic-internal",
        ),
        pytest.param(
            MODERN,
            RuntimeError(),
            ["tool: internal error: RuntimeError (rerun with --debug for a traceback)"],
            id="modern-internal-no-message",
        ),
    ],
)
def test_messages(
    style: Style, error: BaseException, lines: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_command(raiser(error), prog="tool", style=style, debug=False)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == lines


@pytest.mark.parametrize("style", list(Style), ids=lambda s: s.value)
def test_traceback_only_for_internal_errors_under_debug(
    style: Style, capsys: pytest.CaptureFixture[str]
) -> None:
    run_command(raiser(KeyError("k")), prog="tool", style=style, debug=True)
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.splitlines()[-1].endswith("internal error: KeyError: 'k'")
    assert "rerun with --debug" not in err
    # deliberate errors never get one, debug or not
    run_command(raiser(ManifestError("bad")), prog="tool", style=style, debug=True)
    assert "Traceback" not in capsys.readouterr().err


def test_early_exit_prints_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_command(
        raiser(EarlyExit("help", "usage: x")), prog="x", style=CLASSIC, debug=False
    )
    assert (status, capsys.readouterr()) == (0, ("usage: x\n", ""))


def test_system_exit_is_honoured() -> None:
    assert run_command(raiser(SystemExit(3)), prog="x", style=CLASSIC, debug=False) == 3
    assert run_command(raiser(SystemExit(None)), prog="x", style=MODERN, debug=False) == 0


# -- run_cli: parsing and running together ---------------------------------------------


def unbundle_like(style: Style) -> OptionParser:
    parser = OptionParser("ec2-unbundle", style=style, version="ec2-unbundle 1.5.3 20071010")
    add_common_options(parser, style)
    mandatory(parser, "-m", "--manifest", type=existing_file, help="manifest")
    return parser


def test_run_cli_usage_error_classic(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_cli(unbundle_like(CLASSIC), ["--manif", "/nonexistent/m.xml"], lambda ns: 0)
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err[0] == "ERROR: invalid value for --manifest: '/nonexistent/m.xml': no such file"
    assert err[1] == "Try 'ec2-unbundle --help'."


def test_run_cli_modern_usage_error_is_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(unbundle_like(MODERN), [], lambda ns: 0) == 2
    assert capsys.readouterr().err.startswith("ec2-unbundle: error: missing mandatory option")


@pytest.fixture
def manifest(tmp_path: Path) -> str:
    path = tmp_path / "image.manifest.xml"
    path.write_text("<manifest/>")
    return str(path)


def test_run_cli_version_and_body(manifest: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(unbundle_like(CLASSIC), ["--version"], lambda ns: 7) == 0
    assert capsys.readouterr().out == "ec2-unbundle 1.5.3 20071010\n"
    seen: list[argparse.Namespace] = []

    def body(namespace: argparse.Namespace) -> int:
        seen.append(namespace)
        return 7

    assert run_cli(unbundle_like(CLASSIC), [f"-m{manifest}", "-q"], body) == 7
    assert (seen[0].quiet, seen[0].debug, seen[0].batch) == (True, False, False)


def test_run_cli_debug_flag_enables_traceback(
    manifest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def body(_namespace: argparse.Namespace) -> int:
        raise RuntimeError("bug")

    assert run_cli(unbundle_like(CLASSIC), ["-m", manifest], body) == 1
    assert "Traceback" not in capsys.readouterr().err
    run_cli(unbundle_like(CLASSIC), ["-m", manifest, "--deb"], body)
    assert "Traceback" in capsys.readouterr().err


# -- TqdmProgress -----------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_without_terminal_draws_no_bar_but_counts() -> None:
    stream = io.StringIO()
    progress = TqdmProgress(stream=stream)
    assert not progress.enabled  # lines instead (tests/cli/test_progress.py)
    progress.start(Stage.READ, 300)
    for delta in (100, 250, -50):  # a rewind after a retry is a negative delta
        progress.advance(Stage.READ, delta)
    progress.finish(Stage.READ)
    assert (progress.done(Stage.READ), progress.total(Stage.READ)) == (300, 300)
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_progress_draws_on_a_terminal_and_quiet_silences_it() -> None:
    terminal = FakeTerminal()
    progress = TqdmProgress(stream=terminal)
    assert progress.enabled
    progress.start(Stage.UPLOAD, 2 * 1024 * 1024)
    progress.advance(Stage.UPLOAD, 2 * 1024 * 1024)
    progress.finish(Stage.UPLOAD)
    drawn = terminal.getvalue()
    assert "upload" in drawn and "2.00M" in drawn and "100%" in drawn

    quiet_terminal = FakeTerminal()
    quiet = TqdmProgress(quiet=True, stream=quiet_terminal)
    quiet.start(Stage.UPLOAD, 10)
    quiet.advance(Stage.UPLOAD, 10)
    quiet.finish(Stage.UPLOAD, error=RuntimeError("x"))
    assert (quiet.enabled, quiet_terminal.getvalue(), quiet.done(Stage.UPLOAD)) == (False, "", 10)


def test_progress_default_stream_is_stderr_and_not_a_tty_under_pytest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    progress = TqdmProgress()
    progress.start(Stage.VERIFY, None)
    progress.advance(Stage.VERIFY, 5)
    progress.finish(Stage.VERIFY)
    assert capsys.readouterr() == ("", "")
    assert progress.done(Stage.VERIFY) == 5


@pytest.mark.parametrize("stream_factory", [io.StringIO, FakeTerminal], ids=["pipe", "terminal"])
def test_progress_is_thread_safe(stream_factory: Callable[[], io.StringIO]) -> None:
    progress = TqdmProgress(stream=stream_factory())
    threads_n, steps = 8, 500
    progress.start(Stage.DOWNLOAD, threads_n * steps * 3)
    progress.start(Stage.EXTRACT, None)

    def work() -> None:
        for _ in range(steps):
            progress.advance(Stage.DOWNLOAD, 3)
            progress.advance(Stage.EXTRACT, 1)

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.finish(Stage.DOWNLOAD)
    progress.finish(Stage.EXTRACT, error=OSError("disk full"))
    assert progress.done(Stage.DOWNLOAD) == threads_n * steps * 3
    assert progress.done(Stage.EXTRACT) == threads_n * steps


def test_progress_behind_batching_adds_up_and_tolerates_odd_calls() -> None:
    inner = TqdmProgress(stream=io.StringIO())
    batched = BatchedProgress(inner, threshold=1000)
    batched.start(Stage.READ, 10_000)
    for _ in range(77):
        batched.advance(Stage.READ, 123)
    batched.finish(Stage.READ)
    assert inner.done(Stage.READ) == 77 * 123
    inner.advance(Stage.VERIFY, 9)  # never started: still counted
    inner.finish(Stage.EXTRACT)  # never started: harmless
    inner.start(Stage.READ, 5)  # a restart begins from zero
    assert inner.done(Stage.READ) == 0
    inner.close()
    assert inner.done(Stage.VERIFY) == 9


@pytest.mark.parametrize("style", list(Style))
def test_a_declined_question_exits_8_in_both_families(style: Style) -> None:
    """The classic tools exited 0 after a "no", which looked like success."""
    assert exit_code_for(DeclinedError("stopped"), style) == 8
