"""Output folders: amibundle's own commands create a missing destination (and
its parents) and remove what they created when the command fails; the classic
entry points keep requiring an existing directory, as the classic tools did."""

from __future__ import annotations

from pathlib import Path

import pytest

import amibundle
from amibundle.cli import bundle_image as bundle_image_cli
from amibundle.cli import classic_main, main
from amibundle.errors import StorageError
from tests.support.common import Identity, sample_image, tree


def test_bundle_image_creates_a_missing_destination(tmp_path: Path, user_id: Identity) -> None:
    image = sample_image(tmp_path / "disk.img")
    dest = tmp_path / "out" / "nested"
    argv = ["bundle-image", "-i", str(image), "-c", str(user_id.cert), "-k", str(user_id.key),
            "-u", "123456789012", "-r", "x86_64", "-d", str(dest), "--batch"]  # fmt: skip
    assert main(argv) == 0
    report = amibundle.verify_bundle(dest / "disk.img.manifest.xml", cert=user_id.cert)
    assert report.ok, report.problems


def test_a_failing_command_removes_the_folders_it_created(
    tmp_path: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = sample_image(tmp_path / "disk.img")
    before = tree(tmp_path)
    dest = tmp_path / "a" / "b"
    seen = []

    def failing_bundle(*args: object, destination: Path, **kwargs: object) -> None:
        seen.append(destination.is_dir())  # the folder was there for the work
        raise StorageError("cannot write: No space left on device")

    monkeypatch.setattr(bundle_image_cli, "bundle_image", failing_bundle)
    argv = ["bundle-image", "-i", str(image), "-c", str(user_id.cert), "-k", str(user_id.key),
            "-u", "123456789012", "-r", "x86_64", "-d", str(dest), "--batch"]  # fmt: skip
    assert main(argv) == 1
    assert seen == [True]
    assert "No space left" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_unbundle_creates_its_destination(tmp_path: Path, user_id: Identity) -> None:
    image = sample_image(tmp_path / "disk.img")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    main(["bundle-image", "-i", str(image), "-c", str(user_id.cert), "-k", str(user_id.key),
          "-u", "123456789012", "-r", "x86_64", "-d", str(bundle), "--batch", "-q"])  # fmt: skip
    out = tmp_path / "restored" / "here"
    manifest = bundle / "disk.img.manifest.xml"
    assert main(["unbundle", "-m", str(manifest), "-k", str(user_id.key), "-d", str(out)]) == 0
    assert (out / "disk.img").read_bytes() == image.read_bytes()


@pytest.mark.parametrize(
    ("prefix", "message"),
    [("file", "is not a directory"), ("missing", "no such directory")],
)
def test_what_cannot_become_a_folder_and_the_classic_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prefix: str, message: str
) -> None:
    (tmp_path / "file").write_bytes(b"x")
    image = sample_image(tmp_path / "disk.img")
    target = str(tmp_path / prefix / "sub")
    if prefix == "file":
        argv = ["bundle-image", "-i", str(image), "-u", "123456789012", "-r", "x86_64",
                "-d", target]  # fmt: skip
        assert main(argv) == 2
    else:  # the classic entry point: the destination must exist
        argv = ["-i", str(image), "-u", "123456789012", "-r", "x86_64", "-d", target,
                "-c", str(image), "-k", str(image)]  # fmt: skip
        assert classic_main("ec2-bundle-image", argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "missing").exists()
