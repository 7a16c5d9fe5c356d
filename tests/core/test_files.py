"""amibundle.files: outputs written under a hidden temporary name and renamed
into place only when complete, never over an existing file unless asked."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from pathlib import Path

import pytest

from amibundle.errors import OutputExistsError, StorageError, UsageError
from amibundle.files import (
    TempOutput,
    check_directory,
    publish,
    refuse_existing,
    temp_output,
    write_all,
    write_atomically,
)
from tests.support.common import tree
from tests.support.errors import cli_text, one_line


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Boom(Exception):
    pass


# --- temp_output ------------------------------------------------------------------------


def test_the_temporary_file_is_hidden_private_and_beside_the_final(tmp_path: Path) -> None:
    final = tmp_path / "disk.img"
    with temp_output(final) as out:
        assert out.path.parent == tmp_path
        assert out.path.name.startswith(".") and out.path.name.endswith(".partial")
        assert mode_of(out.path) == 0o600
        assert not final.exists()


def test_publish_renames_sets_mode_and_time(tmp_path: Path) -> None:
    final = tmp_path / "disk.img"
    with temp_output(final) as out:
        write_all(out.fd, b"image bytes")
        temp = out.path
        inode = temp.stat().st_ino
        assert out.publish(overwrite=False, mode=0o640, mtime=1_234_567_890) == final
    assert final.read_bytes() == b"image bytes"
    assert mode_of(final) == 0o640
    assert final.stat().st_mtime == 1_234_567_890
    assert final.stat().st_ino == inode  # renamed (linked), not copied
    assert not temp.exists()
    assert tree(tmp_path) == ["disk.img"]


def test_publish_defaults_to_0644_and_none_keeps_0600(tmp_path: Path) -> None:
    with temp_output(tmp_path / "a") as out:
        out.publish(overwrite=False)
    with temp_output(tmp_path / "b") as out:
        out.publish(overwrite=False, mode=None)
    assert (mode_of(tmp_path / "a"), mode_of(tmp_path / "b")) == (0o644, 0o600)


def test_an_exception_discards_the_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(Boom), temp_output(tmp_path / "disk.img") as out:
        write_all(out.fd, b"half an image")
        raise Boom
    assert tree(tmp_path) == []


def test_leaving_without_publishing_discards_too(tmp_path: Path) -> None:
    with temp_output(tmp_path / "disk.img") as out:
        write_all(out.fd, b"never published")
    assert tree(tmp_path) == []


class Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_keep_on_failure_keeps_the_partial_file_and_says_so(tmp_path: Path) -> None:
    # A handler of our own: the CLI's logging set-up (run by other tests in
    # this process) stops amibundle's records from reaching pytest's caplog.
    logger = logging.getLogger("amibundle.files")
    recording = Recording()
    logger.addHandler(recording)
    try:
        with (
            pytest.raises(Boom),
            temp_output(tmp_path / "disk.img", keep_on_failure=True) as out,
        ):
            write_all(out.fd, b"partial image")
            raise Boom
    finally:
        logger.removeHandler(recording)
    assert out.path.read_bytes() == b"partial image"
    assert tree(tmp_path) == [out.path.name]
    assert any(str(out.path) in message for message in recording.messages)


def test_keep_on_failure_after_publish_keeps_only_the_final(tmp_path: Path) -> None:
    with temp_output(tmp_path / "disk.img", keep_on_failure=True) as out:
        out.publish(overwrite=False)
    assert tree(tmp_path) == ["disk.img"]


def test_publish_refuses_an_existing_final(tmp_path: Path) -> None:
    final = tmp_path / "disk.img"
    final.write_bytes(b"precious")
    with temp_output(final) as out:
        write_all(out.fd, b"new")
        with pytest.raises(OutputExistsError) as caught:
            out.publish(overwrite=False)
    assert final.read_bytes() == b"precious"
    assert tree(tmp_path) == ["disk.img"]  # the temporary file went too
    text = one_line(caught)
    assert str(final) in text and "force=True" in text
    assert caught.value.path == final


def test_publish_refuses_a_final_that_appeared_meanwhile(tmp_path: Path) -> None:
    """Checked at the rename itself, not only up front: another process may
    create the file while the long work runs."""
    final = tmp_path / "disk.img"
    refuse_existing([final], force=False)  # nothing there when the work starts
    with temp_output(final) as out:
        write_all(out.fd, b"ours")
        final.write_bytes(b"theirs")  # appears before we publish
        with pytest.raises(OutputExistsError, match="force=True"):
            out.publish(overwrite=False)
    assert final.read_bytes() == b"theirs"
    assert tree(tmp_path) == ["disk.img"]


@pytest.mark.parametrize("what", ["file", "dangling symlink"])
def test_publish_with_overwrite_replaces(what: str, tmp_path: Path) -> None:
    final = tmp_path / "disk.img"
    if what == "file":
        final.write_bytes(b"old")
    else:
        final.symlink_to(tmp_path / "nowhere")
    with temp_output(final) as out:
        write_all(out.fd, b"new")
        out.publish(overwrite=True)
    assert not final.is_symlink() and final.read_bytes() == b"new"
    assert tree(tmp_path) == ["disk.img"]


def test_a_dangling_symlink_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    final = tmp_path / "disk.img"
    final.symlink_to(tmp_path / "nowhere")
    with temp_output(final) as out, pytest.raises(OutputExistsError):
        out.publish(overwrite=False)
    assert final.is_symlink() and not (tmp_path / "nowhere").exists()


def test_publish_the_function(tmp_path: Path) -> None:
    temp, final = tmp_path / ".x.partial", tmp_path / "x"
    temp.write_bytes(b"1")
    publish(temp, final, overwrite=False)
    assert (final.read_bytes(), temp.exists()) == (b"1", False)
    temp.write_bytes(b"2")
    with pytest.raises(OutputExistsError):
        publish(temp, final, overwrite=False)
    assert (final.read_bytes(), temp.read_bytes()) == (b"1", b"2")
    publish(temp, final, overwrite=True)
    assert (final.read_bytes(), temp.exists()) == (b"2", False)


def test_a_missing_folder_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot write to") as caught:
        TempOutput(tmp_path / "missing" / "disk.img")
    assert str(tmp_path / "missing") in one_line(caught)


def test_close_twice_is_harmless(tmp_path: Path) -> None:
    with temp_output(tmp_path / "disk.img") as out:
        out.close()
        out.close()
        assert out.fd == -1
        out.publish(overwrite=False)
    assert (tmp_path / "disk.img").exists()


# --- refuse_existing ------------------------------------------------------------------------


def test_refuse_existing_names_the_first_existing_path(tmp_path: Path) -> None:
    (tmp_path / "b").touch()
    (tmp_path / "c").touch()
    paths = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    with pytest.raises(OutputExistsError) as caught:
        refuse_existing(paths, force=False)
    assert caught.value.path == tmp_path / "b"
    assert one_line(caught) == f"{tmp_path / 'b'} already exists; use force=True to replace it"
    assert cli_text(caught) == f"{tmp_path / 'b'} already exists; use --force to replace it"


def test_refuse_existing_says_what_the_file_is(tmp_path: Path) -> None:
    (tmp_path / "m.xml").touch()
    with pytest.raises(OutputExistsError, match=r"^manifest .*m\.xml already exists"):
        refuse_existing([tmp_path / "m.xml"], force=False, what="manifest")


def test_refuse_existing_counts_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "disk.img"
    link.symlink_to(tmp_path / "nowhere")
    assert not link.exists()  # what a naive exists() check would go by
    with pytest.raises(OutputExistsError):
        refuse_existing([link], force=False)


def test_refuse_existing_lets_force_and_absent_paths_pass(tmp_path: Path) -> None:
    (tmp_path / "x").touch()
    refuse_existing([tmp_path / "x"], force=True)
    refuse_existing([tmp_path / "y", tmp_path / "z"], force=False)
    refuse_existing([], force=False)


# --- check_directory ------------------------------------------------------------------------


def test_check_directory_accepts_folders_and_links_to_them(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    check_directory(tmp_path / "d", "destination")
    check_directory(tmp_path / "link", "destination")


@pytest.mark.parametrize("what", ["missing", "file", "dangling link"])
def test_check_directory_refuses(what: str, tmp_path: Path) -> None:
    path = tmp_path / "out"
    if what == "file":
        path.touch()
    elif what == "dangling link":
        path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError) as caught:
        check_directory(path, "destination")
    assert caught.value.param == "destination"
    assert one_line(caught) == f"destination= {path} is not an existing directory"
    assert cli_text(caught) == f"--destination {path} is not an existing directory"


# --- write_atomically -----------------------------------------------------------------------


def test_write_atomically(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    write_atomically(path, b"one", overwrite=False)
    assert (path.read_bytes(), mode_of(path)) == (b"one", 0o644)
    with pytest.raises(OutputExistsError, match="force=True"):
        write_atomically(path, b"two", overwrite=False)
    assert path.read_bytes() == b"one"
    write_atomically(path, b"three", overwrite=True, mode=0o600)
    assert (path.read_bytes(), mode_of(path)) == (b"three", 0o600)
    assert tree(tmp_path) == ["cert.pem"]


def test_write_atomically_of_nothing_and_of_much(tmp_path: Path) -> None:
    write_atomically(tmp_path / "empty", b"", overwrite=False)
    big = os.urandom(3 << 20)
    write_atomically(tmp_path / "big", big, overwrite=False)
    assert (tmp_path / "empty").read_bytes() == b""
    assert (tmp_path / "big").read_bytes() == big


def test_write_atomically_into_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        write_atomically(tmp_path / "no" / "x", b"1", overwrite=False)
    assert tree(tmp_path) == []


# --- write_all --------------------------------------------------------------------------------


def test_write_all_completes_short_writes(tmp_path: Path) -> None:
    """A blocking write into a full pipe that a signal interrupts returns the
    bytes written so far: a short write. The alarm's handler starts the
    reader, so the first os.write() is cut short at the pipe's capacity
    (64 KiB) and write_all must go on with the rest."""
    data = os.urandom(1 << 20)
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)

    def start_reader(signum: int, frame: object) -> None:
        if not reader.is_alive() and reader.ident is None:
            reader.start()

    previous = signal.signal(signal.SIGALRM, start_reader)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        write_all(write_end, memoryview(data))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(write_end)
    reader.join(timeout=10)
    os.close(read_end)
    assert bytes(received) == data


def test_write_all_of_nothing_writes_nothing() -> None:
    read_end, write_end = os.pipe()
    try:
        write_all(write_end, b"")
        os.close(write_end)
        assert os.read(read_end, 10) == b""
    finally:
        os.close(read_end)


def test_write_all_errors_are_oserrors(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):
            write_all(fd, b"x")
    finally:
        os.close(fd)
