"""One rule for every question (classic-cli.md §1.4): the answer is read from stdin whether
or not it is a terminal, --batch means yes (or the default), end of input means no, and
nothing is printed before every argument has been checked."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from amibundle.cli import _prompt, classic_main, main
from amibundle.errors import DeclinedError, PromptTimeout
from amibundle.format.manifest_reader import parse
from amibundle.validate import normalize_account_id
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image, write_image

YES = ["y\n", "Y\n", "yes\n", "YES please\n", "y"]
NO = ["n\n", "no\n", "\n", "", "  \n", "nope, yes\n", "sure\n"]


Feed = Callable[[str], None]


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> Feed:
    """``feed(text)``: stdin holds ``text`` (a StringIO: not a terminal)."""

    def set_stdin(text: str) -> None:
        monkeypatch.setattr("sys.stdin", io.StringIO(text))

    return set_stdin


@pytest.mark.parametrize("answer", YES)
def test_yes_is_an_answer_starting_with_y(answer: str, feed: Feed) -> None:
    feed(answer)
    assert _prompt.ask("go on?", batch=False) is True
    feed(answer)
    _prompt.confirm("warning: x", "go on?", batch=False)


@pytest.mark.parametrize("answer", NO)
def test_anything_else_and_end_of_input_is_no(answer: str, feed: Feed) -> None:
    feed(answer)
    assert _prompt.ask("go on?", batch=False) is False
    feed(answer)
    with pytest.raises(DeclinedError):
        _prompt.confirm("warning: x", "go on?", batch=False)


def test_batch_is_yes_without_reading(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Unreadable(io.StringIO):
        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
            raise AssertionError("stdin must not be read in batch mode")

    monkeypatch.setattr("sys.stdin", Unreadable())
    _prompt.confirm("warning: odd", "go on?", batch=True)
    assert _prompt.ask_value("arch", "x86_64", batch=True) == "x86_64"
    out, err = capsys.readouterr()
    assert out == "" and err == "warning: odd\n"  # the warning is still printed


@pytest.mark.parametrize(
    ("answer", "value"), [("i386\n", "i386"), ("\n", "x86_64"), ("", "x86_64"), (" arm \n", "arm")]
)
def test_value_questions_keep_the_default_on_empty_or_eof(
    answer: str, value: str, feed: Feed, capsys: pytest.CaptureFixture[str]
) -> None:
    feed(answer)
    assert _prompt.ask_value("Please specify a value for arch", "x86_64", batch=False) == value
    # The question's line is ended even though nothing echoed the answer.
    assert capsys.readouterr().out == "Please specify a value for arch [x86_64]: \n"


def test_a_real_pipe_is_read_and_its_end_is_no(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.pipe()
    with os.fdopen(read) as reader, os.fdopen(write, "w") as writer:
        monkeypatch.setattr("sys.stdin", reader)
        writer.write("y\n")
        writer.flush()
        assert _prompt.ask("first?", batch=False) is True
        writer.close()
        assert _prompt.ask("second?", batch=False) is False


def test_nobody_answering_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_prompt, "TIMEOUT_SECONDS", 0.2)
    read, write = os.pipe()
    try:
        with os.fdopen(read) as reader:
            monkeypatch.setattr("sys.stdin", reader)
            with pytest.raises(PromptTimeout, match="timed out waiting for input"):
                _prompt.ask("anyone?", batch=False)
    finally:
        os.close(write)


# -- the commands follow the rule -----------------------------------------------------------


def test_echo_n_stops_ec2_upload_bundle(tmp_path: Path, user_id: Identity) -> None:
    """``echo n | ec2-upload-bundle -b Old_Bucket ...`` stops before any request (the
    endpoint does not exist); ``echo y`` goes on and fails to connect (exit 3)."""
    result = bundle_for(sample_image(tmp_path / "d.img", 1), user_id, destination=tmp_path)
    argv = [
        sys.executable,
        "-c",
        "import sys; from amibundle.cli import classic_main; "
        "sys.exit(classic_main('ec2-upload-bundle', sys.argv[1:]))",
        "-b",
        "Old_Bucket",
        "-m",
        str(result.manifest_path),
        "-a",
        "AKIAIOSFODNN7EXAMPLE",
        "-s",
        "secret",
        "--url",
        "http://127.0.0.1:9",
        "--retry=1",
    ]
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    no = subprocess.run(argv, input=b"n\n", capture_output=True, env=env, timeout=60)
    assert no.returncode == 8, no.stderr
    assert b"not valid in most regions" in no.stderr
    assert b"stopped: the question was answered no" in no.stderr
    assert b"Uploading" not in no.stdout
    yes = subprocess.run(argv, input=b"y\n", capture_output=True, env=env, timeout=60)
    assert yes.returncode == 3, yes.stderr
    assert b"cannot connect" in yes.stderr or b"cannot look up" in yes.stderr


def _bundle_argv(image: Path, user: Identity, dest: Path, *extra: str) -> list[str]:
    return [
        "-i",
        str(image),
        "-c",
        str(user.cert),
        "-k",
        str(user.key),
        "-u",
        "123456789012",
        "-d",
        str(dest),
        "-q",
        *extra,
    ]


def test_bundle_image_reads_the_architecture_from_stdin(
    tmp_path: Path, user_id: Identity, feed: Feed, capsys: pytest.CaptureFixture[str]
) -> None:
    feed("i386\n")
    image = sample_image(tmp_path / "d.img", 1)
    assert classic_main("ec2-bundle-image", _bundle_argv(image, user_id, tmp_path)) == 0
    manifest = parse((tmp_path / "d.img.manifest.xml").read_bytes()).manifest
    assert manifest.architecture == "i386"
    assert capsys.readouterr().out.startswith("Please specify a value for arch [")


def test_unusual_architecture_is_confirmed_from_stdin(
    tmp_path: Path, user_id: Identity, feed: Feed, capsys: pytest.CaptureFixture[str]
) -> None:
    feed("n\n")
    image = sample_image(tmp_path / "d.img", 1)
    argv = _bundle_argv(image, user_id, tmp_path, "-r", "sparc")
    assert classic_main("ec2-bundle-image", argv) == 8
    assert not (tmp_path / "d.img.manifest.xml").exists()
    assert "Bundling" not in capsys.readouterr().out
    # --batch: yes, and the value is written as given
    assert classic_main("ec2-bundle-image", [*argv, "--batch"]) == 0
    assert parse((tmp_path / "d.img.manifest.xml").read_bytes()).manifest.architecture == "sparc"


# -- validate before printing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param({"-u": "1234567890123"}, 1, id="13-digit-account"),
        pytest.param({"-c": "NOT_A_CERT"}, 254, id="bad-certificate"),
        pytest.param({"-i": "EMPTY"}, 254, id="empty-image"),
        pytest.param({"-i": "HUGE"}, 254, id="image-over-10-GiB"),
    ],
)
def test_nothing_is_printed_or_asked_before_the_arguments_are_checked(
    change: dict[str, str],
    status: int,
    tmp_path: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No "Bundling ..." line, no note about the mapping and no architecture question
    before an error about an argument (stdin is pytest's: reading it would fail)."""
    image = sample_image(tmp_path / "d.img", 1)
    files = {
        "NOT_A_CERT": str(image),
        "EMPTY": str(write_image(tmp_path / "empty.img", 0)),
        "HUGE": str(write_image(tmp_path / "huge.img", 10 * 1024**3 + 1)),
    }
    argv = _bundle_argv(image, user_id, tmp_path, "-B", "swap=sdb")
    for flag, value in change.items():
        argv[argv.index(flag) + 1] = files.get(value, value)
    assert classic_main("ec2-bundle-image", argv) == status
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("ERROR: ")
    # only a usage error points at --help (classic-cli.md §1.6: 254 is not a usage error)
    assert (lines[-1] == "Try 'ec2-bundle-image --help'.") is (status == 1)
    assert sorted(p.name for p in tmp_path.iterdir() if "manifest" in p.name) == []


def test_notes_come_after_the_checks_and_before_the_work(
    tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sample_image(tmp_path / "d.img", 1)
    # Not -q, which silences the notes too: only the bars are turned off.
    plain = [word for word in _bundle_argv(image, user_id, tmp_path) if word != "-q"]
    argv = ["bundle-image", *plain, "-r", "x86_64", "--progress", "none"]
    assert main([*argv, "-B", "swap=sdb"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Bundling {image} into {tmp_path} ..."
    assert out[1:3] == [
        "note: the block device mapping has no 'ami' entry; EC2 applies a default at launch",
        "note: the block device mapping has no 'root' entry; EC2 applies a default at launch",
    ]
    # A second run fails on the existing bundle: the check comes before any line.
    assert main([*argv, "-B", "swap=sdb"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "already exists" in err


@pytest.mark.parametrize(
    ("user", "hinted"),
    [
        ("1234567890123", False),
        ("12345678901", False),
        ("1234-5678-901x", False),
        ("AKIA1", True),
        ("AKIA-1234-5678", False),
        ("x-AKIAIOSFODNN7EXAMPLE", False),
        ("AKIAIOSFODNN7EXAMPLE", True),
        ("ASIAIOSFODNN7EXAMPLE", True),
        ("akiaiosfodnn7example", True),
    ],
)
def test_the_access_key_hint_only_for_what_looks_like_an_access_key(
    user: str, hinted: bool
) -> None:
    with pytest.raises(Exception) as err:
        normalize_account_id(user)
    assert ("access key" in (getattr(err.value, "hint", None) or "")) is hinted


def test_concurrent_announcements_print_once() -> None:
    from amibundle.cli._common import Announcements
    from amibundle.progress import NullProgress, Stage

    notes = Announcements()
    notes.add("once")
    out = io.StringIO()
    progress = notes.progress(NullProgress())
    sys_stdout = sys.stdout
    sys.stdout = out
    try:
        threads = [
            threading.Thread(target=progress.start, args=(Stage.READ, 1)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.stdout = sys_stdout
    assert out.getvalue() == "once\n"
