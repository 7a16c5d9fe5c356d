"""What the commands say: progress lines in logs, -q, counts and rates, notes,
verify's list of checks, inspect's compression. Runs the real command line
in-process; stderr is captured, so it is not a terminal (the CI case)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import amibundle
from amibundle.cli import _common, _progress, main
from tests.support.common import REPO, Identity, sample_image, write_image

MiB = 1 << 20


def bundle_argv(image: Path, user: Identity, out: Path, *extra: str) -> list[str]:
    return [
        "bundle-image", "-i", str(image), "-c", str(user.cert), "-k", str(user.key),
        "-u", "123456789012", "-r", "x86_64", "-d", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return sample_image(tmp_path / "disk.img", 8)


def test_a_log_gets_progress_lines_and_a_terminal_would_get_bars(
    image: Path,
    tmp_path: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_progress, "LINE_INTERVAL", 0.0)  # a line for every step
    assert main(bundle_argv(image, user_id, tmp_path)) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines and all(
        re.fullmatch(
            r"read: [\d.]+ (B|KiB|MiB) of [\d.]+ MiB \(\d+%\), [\d.]+ MB/s, ETA \d+ s", line
        )
        for line in lines[:-1]
    ), lines
    assert re.fullmatch(r"read: done, [\d.]+ MiB in \d+ s \([\d.]+ MB/s\)", lines[-1])
    assert "\r" not in err and "\x1b" not in err  # no bar drawing in a log
    assert out.splitlines()[0] == f"Bundling {image} into {tmp_path} ..."


@pytest.mark.parametrize("style", ["none", "quiet"])
def test_quiet_prints_only_the_result(
    style: str, image: Path, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["-q"] if style == "quiet" else ["--progress", "none"]
    # a note (the mapping has no root entry) and a warning (zstd) that -q silences
    extra += ["-B", "ami=sda1", "--compress", "zstd"]
    assert main(bundle_argv(image, user_id, tmp_path, *extra)) == 0
    out, err = capsys.readouterr()
    if style == "quiet":
        assert err == ""
        assert out.splitlines() == [out.splitlines()[0]]
        assert out.startswith("bundle-image complete: 1 part, ")
    else:  # --progress none silences only the progress
        assert "warning: zstd bundles cannot be registered" in err
        assert "note: the block device mapping has no 'root' entry" in out
        assert "read:" not in err


def test_counts_are_singular_and_tiny_rates_left_out(
    tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = write_image(tmp_path / "tiny.img", 10_000, [(0, b"x" * 100)])
    assert main(bundle_argv(tiny, user_id, tmp_path, "-q")) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(
        rf"bundle-image complete: 1 part, [\d.]+ (B|KiB) in {tmp_path} in [\d.]+ s", line
    )
    manifest = tmp_path / "tiny.img.manifest.xml"
    (tmp_path / "r").mkdir()
    assert (
        main(["unbundle", "-m", str(manifest), "-k", str(user_id.key), "-d", str(tmp_path / "r")])
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert ", 1 part, digest verified" in line and "MB/s" not in line
    assert main(["verify", "-m", str(manifest)]) == 0
    assert "(1 part)" in capsys.readouterr().out


def test_notes_have_one_style() -> None:
    """``note:``, lower case, everywhere (``Note:`` crept into bundle-vol)."""
    sources = "".join(p.read_text() for p in (REPO / "amibundle").rglob("*.py"))
    assert not re.search(r"[\"'(]\s*(Note|NOTE):", sources)


def test_verify_lists_only_what_it_checked(image: Path, tmp_path: Path, user_id: Identity) -> None:
    result = amibundle.bundle_image(
        image,
        metadata=amibundle.BundleMetadata.create(user="123456789012", arch="x86_64"),
        keys=amibundle.BundleKeys.load(cert=user_id.cert, private_key=user_id.key),
        destination=tmp_path,
        part_size=100_000,
    )
    full = amibundle.verify_bundle(result.manifest_path, cert=user_id.cert, private_key=user_id.key)
    assert full.ok
    assert full.checks == (
        "manifest", "signature", "names", "parts present", "part sizes",
        "decryption", "tar stream", "image digest", "part digests",
    )  # fmt: skip
    result.part_paths[1].unlink()
    broken = amibundle.verify_bundle(result.manifest_path, private_key=user_id.key)
    assert not broken.ok
    assert broken.checks == ("manifest", "names", "parts present", "part digests")
    assert any("is missing" in problem for problem in broken.problems)


def test_inspect_with_the_key_shows_the_compression(
    image: Path, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    for codec in ("gzip", "zstd"):
        out = tmp_path / codec
        out.mkdir()
        assert main(bundle_argv(image, user_id, out, "--compress", codec, "-q")) == 0
        manifest = out / "disk.img.manifest.xml"
        capsys.readouterr()
        assert main(["inspect", "-m", str(manifest), "-k", str(user_id.key), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["compression"] == codec
        assert main(["inspect", "-m", str(manifest), "-k", str(user_id.key)]) == 0
        row = next(
            line for line in capsys.readouterr().out.splitlines() if line.startswith("compression")
        )
        assert row.split()[1] == codec and ("cannot read" in row) == (codec == "zstd")
        assert main(["inspect", "-m", str(manifest)]) == 0  # without the key: the mark only
        row = next(
            line for line in capsys.readouterr().out.splitlines() if line.startswith("compression")
        )
        assert ("zstd, says the bundler element" in row) == (codec == "zstd")


def test_unbundle_rates_the_image_data_not_its_holes(
    tmp_path: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 64 MiB image holding 5 MiB of data: unbundle reports both sizes, and
    its rate counts the data (holes cost nothing, so counting them would
    report a speed the disk never saw)."""
    rnd = random.Random(9)
    data = [(MiB, rnd.randbytes(3 * MiB)), (40 * MiB, rnd.randbytes(2 * MiB))]
    image = write_image(tmp_path / "holes.img", 64 * MiB, data)
    out = tmp_path / "out"
    assert main([*bundle_argv(image, user_id, out), "-q"]) == 0
    restored = tmp_path / "restored"
    restored.mkdir()
    manifest = out / "holes.img.manifest.xml"
    result = amibundle.unbundle(manifest, private_key=user_id.key, destination=restored)
    assert (result.size, result.data_size) == (64 * MiB, 5 * MiB)
    assert result.to_dict()["data_size"] == 5 * MiB
    capsys.readouterr()
    monkeypatch.setattr(_common, "_RATE_MIN_SECONDS", 0.0)  # a rate however quick the run
    argv = ["unbundle", "-m", str(manifest), "-k", str(user_id.key), "-d", str(tmp_path / "again")]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "(64.0 MiB, 1 part," in line, line
    assert re.search(r" s \([\d.]+ [kMG]?B/s of image data\)$", line), line
