"""download_unbundle / ``amibundle download-unbundle``: a bundle in a bucket back into its
image in one pass, on moto and SeaweedFS: into a new sparse file, over an existing file or
block device (holes written as zeros), and to standard output."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import amibundle
from amibundle.cli import main
from amibundle.errors import IntegrityError, PartialImageError
from tests.support.bundling import bundle_for
from tests.support.common import Identity, sample_image, tree, write_image
from tests.support.s3bundles import MakeProxy, settings_for
from tests.support.s3servers import S3Server

MiB = 1 << 20
AMIBUNDLE = Path(sys.executable).parent / "amibundle"


@pytest.fixture(scope="module")
def sparse_bundle(
    tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity
) -> Path:
    """A bundle (64 KiB parts) of an 8 MiB sparse image: holes at both ends, zeros, text
    and random data. Returns the image; the bundle is beside it in bundle/."""
    folder = tmp_path_factory.mktemp("sparse")
    image = sample_image(folder / "disk.img", mib=8)
    (folder / "bundle").mkdir()
    bundle_for(
        image, user_id, ec2_cert=ec2_id.cert, destination=folder / "bundle", part_size=64 * 1024
    )
    return image


@pytest.fixture(scope="module")
def random_bundle(
    tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity
) -> Path:
    """A bundle (256 KiB parts) of a 12 MiB image with 6 MiB of random data between holes:
    large enough that the image is written well before the last part is reached."""
    folder = tmp_path_factory.mktemp("random")
    image = write_image(
        folder / "disk.img",
        12 * MiB,
        [(1 * MiB, os.urandom(3 * MiB)), (6 * MiB, os.urandom(3 * MiB))],
    )
    (folder / "bundle").mkdir()
    bundle_for(
        image, user_id, ec2_cert=ec2_id.cert, destination=folder / "bundle", part_size=256 * 1024
    )
    return image


def put_bundle(server: S3Server, image: Path, bucket: str = "back") -> None:
    amibundle.upload_bundle(
        image.parent / "bundle" / f"{image.name}.manifest.xml", bucket,
        settings=settings_for(server),
    )  # fmt: skip


def tamper(server: S3Server, bucket: str, key: str) -> None:
    client = server.client()
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[100] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def part_names(image: Path) -> list[str]:
    manifest = amibundle.read_manifest(image.parent / "bundle" / f"{image.name}.manifest.xml")
    return [part.filename for part in manifest.manifest.parts]


def creds(server: S3Server) -> list[str]:
    return ["-a", server.access_key, "-s", server.secret_key, "--url", server.endpoint_url]


def test_into_a_sparse_file(
    s3_server: S3Server,
    make_proxy: MakeProxy,
    sparse_bundle: Path,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    put_bundle(s3_server, sparse_bundle)
    proxy = make_proxy(s3_server.endpoint_url)
    argv = ["-b", "back", "-p", "disk.img", "-k", str(user_id.key), "-d", str(tmp_path)]
    argv += ["--cert", str(user_id.cert), "--url", proxy.endpoint_url]
    argv += ["-a", s3_server.access_key, "-s", s3_server.secret_key, "--jobs", "1"]
    assert main(["download-unbundle", *argv]) == 0, capsys.readouterr().err
    restored = tmp_path / "disk.img"
    assert tree(tmp_path) == ["disk.img"]
    assert restored.read_bytes() == sparse_bundle.read_bytes()
    assert restored.stat().st_blocks * 512 < 4 * MiB  # holes and zero runs stay holes
    parts = [r for r in proxy.requests if r.method == "GET" and ".part." in r.path]
    assert [r.path for r in parts] == sorted(r.path for r in parts)  # one ahead: strictly in order
    summary = capsys.readouterr().out
    assert f"Unbundled 8.0 MiB image to {restored} from {len(parts)} part" in summary
    assert (" 1 parts " not in summary) and ("(0 MB/s)" not in summary), summary


def test_download_with_unbundle_flag(
    moto_s3: S3Server, sparse_bundle: Path, user_id: Identity, tmp_path: Path
) -> None:
    put_bundle(moto_s3, sparse_bundle)
    argv = ["-b", "back", "-p", "disk.img", "-k", str(user_id.key), "-d", str(tmp_path)]
    assert main(["download", "--unbundle", *argv, *creds(moto_s3)]) == 0
    assert tree(tmp_path) == ["disk.img"]
    assert (tmp_path / "disk.img").read_bytes() == sparse_bundle.read_bytes()


def test_a_tampered_part_leaves_nothing_behind(
    moto_s3: S3Server, sparse_bundle: Path, user_id: Identity, tmp_path: Path
) -> None:
    put_bundle(moto_s3, sparse_bundle)
    name = part_names(sparse_bundle)[2]
    tamper(moto_s3, "back", name)
    with pytest.raises(IntegrityError, match=f"{name} is damaged"):
        amibundle.download_unbundle(
            "back", settings=settings_for(moto_s3), manifest_name="disk.img.manifest.xml",
            private_key=user_id.key, destination=tmp_path,
        )  # fmt: skip
    assert tree(tmp_path) == []


@pytest.fixture
def prefilled(tmp_path: Path, sparse_bundle: Path) -> Path:
    """A file larger than the image, full of 0xFF: what was on it must not survive."""
    target = tmp_path / "target"
    target.write_bytes(b"\xff" * (sparse_bundle.stat().st_size + MiB))
    return target


def test_over_an_existing_file_every_byte_holes_included(
    moto_s3: S3Server, sparse_bundle: Path, user_id: Identity, prefilled: Path
) -> None:
    put_bundle(moto_s3, sparse_bundle)
    result = amibundle.download_unbundle(
        "back", settings=settings_for(moto_s3), manifest_name="disk.img.manifest.xml",
        private_key=user_id.key, device=prefilled,
    )  # fmt: skip
    assert result.output_kind == "device"
    assert prefilled.read_bytes() == sparse_bundle.read_bytes()


def test_a_failure_midway_on_a_device_says_how_far_it_got(
    moto_s3: S3Server,
    random_bundle: Path,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefilled = tmp_path / "target"
    prefilled.write_bytes(b"\xff" * random_bundle.stat().st_size)
    put_bundle(moto_s3, random_bundle)
    last = part_names(random_bundle)[-1]
    tamper(moto_s3, "back", last)
    argv = ["-b", "back", "-p", "disk.img", "-k", str(user_id.key), "--to-device", str(prefilled)]
    assert main(["download-unbundle", *argv, *creds(moto_s3)]) == 1
    line = capsys.readouterr().err.splitlines()[0]
    assert f"{last} is damaged" in line, line
    assert "every byte before offset " in line, line
    written = int(line.split("every byte before offset ")[1].split()[0])
    assert 1 * MiB < written < random_bundle.stat().st_size
    assert prefilled.read_bytes()[:written] == random_bundle.read_bytes()[:written]

    with pytest.raises(PartialImageError) as error:
        amibundle.download_unbundle(
            "back", settings=settings_for(moto_s3), manifest_name="disk.img.manifest.xml",
            private_key=user_id.key, device=prefilled,
        )  # fmt: skip
    assert error.value.written == written


@contextlib.contextmanager
def loop_device(backing: Path) -> Iterator[Path]:
    losetup = shutil.which("losetup")
    if losetup is None or os.geteuid() != 0:
        pytest.skip("loop devices need root and losetup")
    attach = subprocess.run(
        [losetup, "--find", "--show", str(backing)], capture_output=True, text=True
    )
    if attach.returncode != 0:
        pytest.skip(f"loop devices are not usable here: {attach.stderr.strip()}")
    device = Path(attach.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run([losetup, "--detach", str(device)], check=False)


def test_onto_a_loop_device(
    moto_s3: S3Server, sparse_bundle: Path, user_id: Identity, prefilled: Path
) -> None:
    put_bundle(moto_s3, sparse_bundle)
    size = sparse_bundle.stat().st_size
    with loop_device(prefilled) as device:
        amibundle.download_unbundle(
            "back", settings=settings_for(moto_s3), manifest_name="disk.img.manifest.xml",
            private_key=user_id.key, device=device,
        )  # fmt: skip
    data = prefilled.read_bytes()
    assert data[:size] == sparse_bundle.read_bytes()
    assert data[size:] == b"\xff" * MiB  # a device keeps what lies beyond the image


def test_to_standard_output_into_cmp(
    moto_s3: S3Server, sparse_bundle: Path, user_id: Identity
) -> None:
    put_bundle(moto_s3, sparse_bundle)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": moto_s3.access_key,
        "AWS_SECRET_ACCESS_KEY": moto_s3.secret_key,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    command = (
        f"{AMIBUNDLE} download-unbundle -b back -p disk.img -k {user_id.key} "
        f"--url {moto_s3.endpoint_url} -o - | cmp - {sparse_bundle}"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unbundled 8.0 MiB image to standard output" in done.stderr
