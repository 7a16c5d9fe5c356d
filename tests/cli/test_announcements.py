"""One rule for what a command says besides its result (cli._common.Announcements):
held back until the library starts work (and dropped if it fails first),
silenced by -q, and kept off stdout with --json."""

from __future__ import annotations

import gzip
import json
from argparse import Namespace
from pathlib import Path

import pytest

from amibundle.cli import main
from amibundle.cli._common import Announcements
from amibundle.progress import NullProgress, Stage
from tests.support.common import Identity, sample_image, tree

MAPPING_NOTES = [
    "note: the block device mapping has no 'ami' entry; EC2 applies a default at launch",
    "note: the block device mapping has no 'root' entry; EC2 applies a default at launch",
]
ZSTD_WARNING = "warning: zstd bundles cannot be registered in EC2; use them only elsewhere"


def test_lines_wait_for_the_work_and_notes_of_the_work_come_after_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    notes = Announcements()
    notes.add("Working ...")
    notes.add("note: on stderr", stderr=True)
    assert capsys.readouterr() == ("", "")  # nothing before the work starts
    notes.notify()("read as gzip")
    notes.progress(NullProgress()).start(Stage.READ, 1)  # nothing held any more
    out, err = capsys.readouterr()
    assert out.splitlines() == ["Working ...", "note: read as gzip"]
    assert err.splitlines() == ["note: on stderr"]


def test_quiet_drops_every_note_and_json_sends_them_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    quiet = Announcements(quiet=True)
    quiet.add("Working ...")
    quiet.progress(NullProgress()).start(Stage.READ, 1)
    quiet.notify()("read as gzip")
    quiet.say("said")
    assert capsys.readouterr() == ("", "")
    for_json = Announcements(json_output=True)
    for_json.add("held")
    for_json.notify()("read as gzip")
    assert capsys.readouterr() == ("", "held\nnote: read as gzip\n")


def test_of_reads_q_and_json_from_the_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    Announcements.of(Namespace(quiet=True, json=False)).say("x")
    Announcements.of(Namespace(quiet=False, json=True)).say("y")
    Announcements.of(Namespace()).say("z")
    assert capsys.readouterr() == ("z\n", "y\n")


def _argv(image: Path, out: Path, *extra: str) -> list[str]:
    # No -c/-k: the key note; -B without ami/root: two notes; zstd: a warning.
    return [
        "bundle-image", "-i", str(image), "-u", "123456789012", "-r", "x86_64", "-d", str(out),
        "-B", "swap=sdb", "--compress", "zstd", "--progress", "none", *extra,
    ]  # fmt: skip


def test_every_note_of_bundle_image_in_order_after_the_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sample_image(tmp_path / "d.img", 1)
    assert main(_argv(image, tmp_path)) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("note: no -c/-k given: this bundle gets its own new key")
    assert lines[1:4] == [f"Bundling {image} into {tmp_path} ...", *MAPPING_NOTES]
    assert err.splitlines() == [ZSTD_WARNING]
    # The same command again fails on the bundle now there: no note comes first.
    assert main(_argv(image, tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("amibundle bundle-image: error:") and "exists" in err


def test_quiet_bundle_image_prints_only_the_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sample_image(tmp_path / "d.img", 1)
    assert main(_argv(image, tmp_path, "-q")) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "bundle-image complete",
        f"New key {tmp_path}/d.img.key.pem and certificate {tmp_path}/d.img.cert.pem",
    ]


def test_json_bundle_image_keeps_stdout_for_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sample_image(tmp_path / "d.img", 1)
    assert main(_argv(image, tmp_path, "--json")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["compression"] == "zstd"
    notes = err.splitlines()
    assert notes[0].startswith("note: no -c/-k given")
    assert notes[1:] == [*MAPPING_NOTES, ZSTD_WARNING]  # no "Bundling ..." line with --json


def test_a_note_of_the_library_is_silenced_by_q(
    tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    """The library's own notes (how a compressed image is read) follow the same rule."""
    image = sample_image(tmp_path / "d.img", 1)
    packed = tmp_path / "d.img.gz"
    packed.write_bytes(gzip.compress(image.read_bytes()))
    keys = ["-c", str(user_id.cert), "-k", str(user_id.key)]
    base = ["bundle-image", "-i", str(packed), *keys, "-u", "123456789012", "-r", "x86_64"]
    out = tmp_path / "out"
    out.mkdir()
    assert main([*base, "-d", str(out), "--progress", "none"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"Bundling {packed} into {out} ..."
    assert said[1].startswith(f"note: {packed}: gzip-compressed, decompressed on the fly")
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    assert main([*base, "-d", str(quiet), "-q"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "bundle-image complete"
    ]
    assert "d.img.gz.manifest.xml" in tree(quiet)
