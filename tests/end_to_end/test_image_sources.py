"""Any image format in: compressed images, qemu's disk formats and standard input
bundle to the very image they hold, holes stay holes, and bad input ends with one
error and nothing written.

The compressed and disk images are made by the real tools (gzip, bzip2, xz, zstd,
qemu-img), never by amibundle; each bundle is unbundled and compared byte for byte.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

import amibundle
from amibundle import bundling, validate
from amibundle.bundling import BundleResult
from amibundle.cli import main
from amibundle.errors import ImageSizeError
from amibundle.format.tar import Extent
from amibundle.progress import Stage
from amibundle.sources import qemu
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image, tree

AMIBUNDLE = Path(sys.executable).parent / "amibundle"  # the venv's entry point
MiB = 1 << 20

COMPRESSORS = {
    "gzip": ["gzip", "-c"],
    "bzip2": ["bzip2", "-c"],
    "xz": ["xz", "-c", "-T1"],
    "zstd": ["zstd", "-q", "-c"],
}
DISK_FORMATS = {"qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx"}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 MiB: holes, random and text data, written zeros."""
    return sample_image(tmp_path_factory.mktemp("raw") / "disk.img", 8)


def made_by(tool: list[str], source: Path, target: Path) -> Path:
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} is not installed (make test installs it)")
    with open(target, "wb") as out:  # zstd records the size of a file (not of a pipe)
        subprocess.run([*tool, str(source)], stdout=out, check=True)
    return target


def qemu_image(raw: Path, target: Path, driver: str) -> Path:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (qemu-utils; make test installs it)")
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", driver, str(raw), str(target)],
        check=True,
    )
    return target


def restored(result: BundleResult, identity: Identity, folder: Path) -> bytes:
    folder.mkdir()
    image = amibundle.unbundle(result.manifest_path, private_key=identity.key, destination=folder)
    return image.image_path.read_bytes()


class Recorder:
    """A Progress that keeps which stages ran, and a notify that keeps the lines."""

    def __init__(self) -> None:
        self.stages: list[tuple[Stage, int | None]] = []
        self.advanced = 0
        self.notes: list[str] = []

    def start(self, stage: Stage, total: int | None) -> None:
        self.stages.append((stage, total))

    def advance(self, stage: Stage, nbytes: int) -> None:
        self.advanced += nbytes

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        pass


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_images_bundle_to_the_image_they_hold(
    kind: str, raw: Path, tmp_path: Path, user_id: Identity
) -> None:
    image = made_by(COMPRESSORS[kind], raw, tmp_path / f"disk.img.{kind}")
    plain = bundle_for(raw, user_id, destination=tmp_path, prefix="plain")
    seen = Recorder()
    result = bundle_for(
        image,
        user_id,
        destination=tmp_path,
        prefix="packed",
        progress=seen,
        notify=seen.notes.append,
    )
    assert result.image_format == kind
    assert restored(result, user_id, tmp_path / "restored") == raw.read_bytes()
    # The first pass found the same holes and zero runs as in the raw file.
    assert result.image_size == plain.image_size
    assert result.data_size < result.image_size // 4
    assert abs(result.data_size - plain.data_size) <= 2 * (64 << 10)  # tails of two runs
    assert [stage for stage, _ in seen.stages] == [Stage.SCAN, Stage.READ]
    recorded = kind in ("xz", "zstd")
    assert seen.stages[0][1] == (raw.stat().st_size if recorded else None)
    (note,) = seen.notes
    assert f"{kind}-compressed, decompressed on the fly twice" in note
    if recorded:
        assert f"according to the {kind} " in note
    else:
        assert "counted in a first pass" in note


@pytest.mark.parametrize("kind", sorted(DISK_FORMATS))
def test_disk_images_bundle_through_qemu_img_with_their_holes(
    kind: str, raw: Path, tmp_path: Path, user_id: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = qemu_image(raw, tmp_path / f"disk.{kind}", DISK_FORMATS[kind])
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(qemu, "WINDOW", 1 * MiB)  # many windows, each converted ahead
    spans: list[int] = []
    real_convert = qemu.QemuImage._convert

    def convert(self: qemu.QemuImage, group: list[Extent], chunk: Path) -> Path:
        spans.append(group[-1].offset + group[-1].length - group[0].offset)
        done = real_convert(self, group, chunk)
        assert done.stat().st_size <= 1 * MiB
        return done

    monkeypatch.setattr(qemu.QemuImage, "_convert", convert)
    seen = Recorder()
    result = bundle_for(image, user_id, destination=tmp_path, progress=seen)
    data = restored(result, user_id, tmp_path / "restored")
    want = raw.read_bytes()
    assert data[: len(want)] == want and not any(data[len(want) :])  # VHD rounds up to CHS
    assert result.image_format == kind
    assert result.data_size < result.image_size // 4  # holes and zero runs stayed holes
    assert len(spans) > 4 and max(spans) <= 1 * MiB  # no full-size intermediate, ever
    assert [stage for stage, _ in seen.stages] == [Stage.SCAN, Stage.READ]
    assert tree(scratch) == []  # the scratch files are gone


# --- standard input ----------------------------------------------------------------------


def bundle_stdin(
    data: bytes | Path, out: Path, *extra: str, keys: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """``amibundle bundle-image -i -`` with ``data`` on a pipe (or a file on stdin)."""
    argv = [str(AMIBUNDLE), "bundle-image", "-i", "-", "-u", "123456789012", "-r", "x86_64"]
    argv += ["-d", str(out), "-q", *keys, *extra]
    if isinstance(data, Path):
        with open(data, "rb") as stdin:
            return subprocess.run(argv, stdin=stdin, capture_output=True, text=True)
    return _run_bytes(argv, data)


def _run_bytes(argv: list[str], data: bytes) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=data, capture_output=True)
    return subprocess.CompletedProcess(
        argv, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def user_keys(identity: Identity) -> tuple[str, ...]:
    return ("-c", str(identity.cert), "-k", str(identity.key))


def test_a_pipe_bundles_with_its_size_given(raw: Path, tmp_path: Path, user_id: Identity) -> None:
    data = raw.read_bytes()
    done = bundle_stdin(data, tmp_path, "--image-size", str(len(data)), keys=user_keys(user_id))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bundle-image complete: 1 part, ")
    result = amibundle.read_manifest(tmp_path / "image.manifest.xml").manifest
    assert result.name == "image" and result.size == len(data)
    (tmp_path / "r").mkdir()
    manifest = tmp_path / "image.manifest.xml"
    image = amibundle.unbundle(manifest, private_key=user_id.key, destination=tmp_path / "r")
    assert image.image_path.read_bytes() == data


def test_a_zstd_pipe_needs_no_size_and_a_file_on_stdin_keeps_its_holes(
    raw: Path, tmp_path: Path, user_id: Identity
) -> None:
    packed = made_by(COMPRESSORS["zstd"], raw, tmp_path / "disk.zst")
    (tmp_path / "a").mkdir()
    done = bundle_stdin(packed.read_bytes(), tmp_path / "a", keys=user_keys(user_id))
    assert done.returncode == 0, done.stderr  # the frame header said the size
    (tmp_path / "b").mkdir()
    done = bundle_stdin(raw, tmp_path / "b", "--json", keys=user_keys(user_id))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["image_format"] == "raw" and result["data_size"] < result["image_size"] // 4


@pytest.mark.parametrize(
    ("given", "status", "message"),
    [
        ("+1", 1, r"standard input ended after \d+ bytes, but its size is \d+"),
        ("-1", 1, r"standard input holds more than \d+ bytes, the size announced"),
        (None, 2, r"--image-size is needed to read an image from standard input"),
    ],
    ids=["shorter", "longer", "no size"],
)
def test_a_pipe_of_the_wrong_length_leaves_nothing(
    given: str | None, status: int, message: str, raw: Path, tmp_path: Path
) -> None:
    """Without -c/-k either: not even the key made for the bundle is left."""
    data = raw.read_bytes()
    extra = [] if given is None else ["--image-size", str(len(data) + int(given))]
    out = tmp_path / "out"
    out.mkdir()
    done = bundle_stdin(data, out, *extra)
    assert done.returncode == status
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and re.search(message, errors[0]), done.stderr
    assert tree(out) == []


def test_a_terminal_on_stdin_is_refused_at_once(tmp_path: Path, user_id: Identity) -> None:
    controller, terminal = pty.openpty()
    try:
        argv = [str(AMIBUNDLE), "bundle-image", "-i", "-", "--image-size", "1M"]
        argv += [*user_keys(user_id), "-u", "123456789012", "-r", "x86_64", "-d", str(tmp_path)]
        done = subprocess.run(argv, stdin=terminal, capture_output=True, text=True, timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 2
    assert "--image - reads the image from standard input, which is a terminal" in done.stderr
    assert tree(tmp_path) == []


# --- what is not an image ------------------------------------------------------------------


def tarball(tmp_path: Path, compress: str) -> Path:
    target = tmp_path / f"tree.tar{'.' + compress if compress else ''}"
    with tarfile.open(target, f"w:{compress}") as archive:
        archive.add(__file__, arcname="etc/hostname")
    return target


@pytest.mark.parametrize("kind", ["folder", "tar", "tar.gz", "tar.xz"])
def test_trees_point_at_bundle_vol(
    kind: str, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path if kind == "folder" else tarball(tmp_path, kind[4:])
    out = tmp_path / "out"
    out.mkdir()
    argv = ["bundle-image", "-i", str(image), *user_keys(user_id), "-u", "123456789012"]
    assert main([*argv, "-r", "x86_64", "-d", str(out)]) == 2
    err = capsys.readouterr().err
    if kind == "folder":  # refused by the option's own check, as every file option does
        first = err.splitlines()[0]
        assert "not a regular file but a directory" in first and "with bundle-vol" in first
    else:
        assert "tar archive, not a disk image" in err.splitlines()[0]
        assert "hint: to bundle a tree of files, make an image of it with bundle-vol" in err
    assert tree(out) == []


def test_damaged_compressed_data_is_one_error(raw: Path, tmp_path: Path, user_id: Identity) -> None:
    packed = made_by(COMPRESSORS["gzip"], raw, tmp_path / "disk.gz")
    os.truncate(packed, packed.stat().st_size // 2)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(amibundle.AmibundleError, match=r"its gzip data is damaged or cut short"):
        bundle_for(packed, user_id, destination=out)
    assert tree(out) == []


def test_an_image_over_the_limit_is_refused_early(
    raw: Path, tmp_path: Path, user_id: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 1 * MiB
    monkeypatch.setattr(bundling, "MAX_IMAGE_SIZE", limit)
    monkeypatch.setattr(validate, "MAX_IMAGE_SIZE", limit)
    for kind, at_least in (("xz", False), ("gzip", True)):
        packed = made_by(COMPRESSORS[kind], raw, tmp_path / f"disk.{kind}")
        seen = Recorder()
        with pytest.raises(ImageSizeError, match="larger than EC2's 10 GiB limit") as err:
            bundle_for(packed, user_id, destination=tmp_path, progress=seen)
        if at_least:  # counted: the first pass stopped soon after the limit
            assert "at least" in str(err.value) and seen.advanced < 4 * limit
        else:  # the xz index said so: no pass at all
            assert seen.stages == [] and str(raw.stat().st_size) in str(err.value)
    assert not list(tmp_path.glob("*.part.*")) and not list(tmp_path.glob("*.manifest.xml"))
