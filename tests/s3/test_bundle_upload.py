"""bundle_upload / ``amibundle bundle-upload``: an image straight into a bucket, on moto
and SeaweedFS, through the recording proxy.

What is checked: the bucket holds exactly the bundle (1-, 2- and 3-digit part counts),
every object went up with the ACL and a Content-MD5 that matches its bytes, the manifest
last; the bundle comes back byte for byte through download + unbundle (and the classic
ec2-unbundle, which takes part names from the manifest) and through download_unbundle.
Faults (errors and resets) still give a complete bundle; an ACL-disabled bucket is
refused before the image is read; Ctrl-C deletes what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amibundle
from amibundle import s3, uploading
from amibundle.cli import classic_main, main
from amibundle.compression import Compression
from amibundle.errors import AclsDisabledError
from amibundle.pipeline import Codec
from amibundle.progress import Stage
from amibundle.s3.sink import PartNames, max_bundled_size
from tests.support.bundling import bundle_for, keys_for, metadata_for
from tests.support.common import Identity, sample_image, tree
from tests.support.s3bundles import MakeProxy, key_of, object_bytes, object_puts, settings_for
from tests.support.s3proxy import Faults
from tests.support.s3servers import S3Server

KiB = 1024
AMIBUNDLE = Path(sys.executable).parent / "amibundle"


def random_image(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def upload_image(
    image: Path, bucket: str, settings: s3.S3Settings, identity: Identity, **options: object
) -> uploading.BundleUploadResult:
    return uploading.bundle_upload(
        image,
        bucket,
        metadata=metadata_for(),
        keys=keys_for(identity),
        settings=settings,
        **options,  # type: ignore[arg-type]
    )


def restore_from_bucket(
    server: S3Server, bucket: str, name: str, identity: Identity, folder: Path
) -> Path:
    """download, verify (with -k: the whole stream) and unbundle; the image's path."""
    fetched = folder / "fetched"
    restored = folder / "restored"
    fetched.mkdir()
    restored.mkdir()
    down = amibundle.download_bundle(
        bucket, settings=settings_for(server), manifest_name=f"{name}.manifest.xml",
        directory=fetched,
    )  # fmt: skip
    report = amibundle.verify_bundle(
        down.manifest_path, cert=identity.cert, private_key=identity.key
    )
    assert report.ok, report.problems
    argv = ["-m", str(down.manifest_path), "-k", str(identity.key), "-s", str(fetched)]
    assert classic_main("ec2-unbundle", [*argv, "-d", str(restored)]) == 0
    return restored / name


# (image size, part size, digits of the part names)
PART_COUNTS = {
    "1-digit": (300 * KiB, 64 * KiB, 1),
    "2-digit": (200 * KiB, 16 * KiB, 2),
    "3-digit": (120 * KiB, 1 * KiB, 3),
}


@pytest.mark.parametrize("counts", list(PART_COUNTS), ids=list(PART_COUNTS))
def test_bucket_holds_exactly_the_bundle_and_gives_the_image_back(
    counts: str,
    s3_server: S3Server,
    make_proxy: MakeProxy,
    user_id: Identity,
    tmp_path: Path,
) -> None:
    size, part_size, digits = PART_COUNTS[counts]
    image = random_image(tmp_path / "img", size)
    proxy = make_proxy(s3_server.endpoint_url)
    result = upload_image(
        image, "streamed/v1", settings_for(s3_server, proxy.endpoint_url), user_id,
        part_size=part_size,
    )  # fmt: skip

    count = len(result.part_keys)
    assert len(str(count)) == digits
    names = PartNames("img", digits).names(count)
    assert result.part_keys == tuple(f"v1/{n}" for n in names)
    objects = object_bytes(s3_server, "streamed")
    assert sorted(objects) == sorted(["v1/img.manifest.xml", *result.part_keys])
    puts = object_puts(proxy, "streamed")
    assert len(puts) == count + 1 and not any(r.fault for r in puts)
    assert key_of(puts[-1].path, "streamed") == "v1/img.manifest.xml"  # the manifest last
    for put in puts:
        body = objects[key_of(put.path, "streamed")]
        assert put.headers["x-amz-acl"] == "aws-exec-read"
        assert put.headers["content-md5"] == base64.b64encode(hashlib.md5(body).digest()).decode()

    restored = restore_from_bucket(s3_server, "streamed/v1", "img", user_id, tmp_path)
    assert restored.read_bytes() == image.read_bytes()
    (tmp_path / "direct").mkdir()
    direct = amibundle.download_unbundle(
        "streamed/v1", settings=settings_for(s3_server), manifest_name="img.manifest.xml",
        private_key=user_id.key, destination=tmp_path / "direct", cert=user_id.cert,
    )  # fmt: skip
    assert Path(direct.output).read_bytes() == image.read_bytes()


def test_names_are_padded_to_the_largest_count_the_stream_could_reach(
    moto_s3: S3Server, user_id: Identity, tmp_path: Path
) -> None:
    """A compressible image gives fewer parts than its tar size allows: the names keep
    the width fixed before the count was known, and every reader takes them from the
    manifest (verify, unbundle, the classic ec2-unbundle)."""
    image = sample_image(tmp_path / "disk.img", mib=8)  # holes, zeros, text, random data
    result = upload_image(image, "wide", settings_for(moto_s3), user_id, part_size=64 * KiB)
    count = len(result.part_keys)
    assert count < 10 <= max_bundled_size(result.tar_size) // (64 * KiB)
    assert result.part_keys == tuple(f"disk.img.part.{i:02d}" for i in range(count))
    restored = restore_from_bucket(moto_s3, "wide", "disk.img", user_id, tmp_path)
    assert restored.read_bytes() == image.read_bytes()


@settings(max_examples=25, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=600_000),
    compression=st.sampled_from(list(Compression)),
)
def test_the_part_count_never_exceeds_the_bound_for_incompressible_data(
    size: int, compression: Compression, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from amibundle.bundling import open_image
    from amibundle.crypto import BundleKey
    from amibundle.format.tar_writer import tar_size
    from amibundle.pipeline import bundle_stream

    class Counting:
        def __init__(self) -> None:
            self.total = 0

        def open_part(self, index: int) -> None:
            pass

        def write(self, data: memoryview) -> None:
            self.total += len(data)

        def close_part(self, record: object) -> None:
            pass

        def abort(self) -> None:
            pass

    image = random_image(tmp_path_factory.mktemp("bound") / "img", size, seed=size)
    sink = Counting()
    with open_image(image, "img", size_checks=False) as source:
        stream = bundle_stream(
            source.fd, source.member, BundleKey.generate(os.urandom), sink, part_size=4096,
            codec=Codec(compression, threads=2),
        )  # fmt: skip
        assert stream.bundled_size == sink.total <= max_bundled_size(tar_size(source.member))


@pytest.mark.parametrize("seed", [3])
def test_faults_still_end_in_a_complete_bundle(
    s3_server: S3Server,
    make_proxy: MakeProxy,
    user_id: Identity,
    tmp_path: Path,
    fast_retries: None,
    seed: int,
) -> None:
    image = random_image(tmp_path / "img", 400 * KiB, seed)
    proxy = make_proxy(s3_server.endpoint_url, Faults(error_rate=0.2, reset_rate=0.15, seed=seed))
    settings = settings_for(s3_server, proxy.endpoint_url, attempts=10, jobs=4)
    result = upload_image(image, "faulty", settings, user_id, part_size=16 * KiB)

    kinds = {r.fault for r in proxy.requests if r.fault}
    assert kinds & {"drop", "cut"} and kinds & {"500", "503", "SlowDown"}
    proxy.set_faults(None)
    assert sorted(object_bytes(s3_server, "faulty")) == sorted(
        ["img.manifest.xml", *result.part_keys]
    )
    restored = restore_from_bucket(s3_server, "faulty", "img", user_id, tmp_path)
    assert restored.read_bytes() == image.read_bytes()


def test_acl_disabled_bucket_is_refused_before_the_image_is_read(
    moto_s3: S3Server,
    make_proxy: MakeProxy,
    user_id: Identity,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = moto_s3.client()
    client.create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
    image = random_image(tmp_path / "img", 100 * KiB)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the image was opened")

    monkeypatch.setattr(uploading, "open_image", never)
    proxy = make_proxy(moto_s3.endpoint_url)
    with pytest.raises(AclsDisabledError) as error:
        upload_image(image, "enforced", settings_for(moto_s3, proxy.endpoint_url), user_id)
    assert "BucketOwnerEnforced" in str(error.value)
    assert object_puts(proxy, "enforced") == []
    assert object_bytes(moto_s3, "enforced") == {}


class InterruptOnceUploaded:
    """Raises KeyboardInterrupt while reading the image: once 2 MiB were read (1 MiB is
    compressed for sure), it waits until the proxy saw ``puts`` PUTs, then raises."""

    def __init__(self, proxy: object, bucket: str, puts: int) -> None:
        self.proxy, self.bucket, self.puts = proxy, bucket, puts
        self.read = 0
        self.fired = False

    def start(self, stage: Stage, total: int | None) -> None:
        pass

    def advance(self, stage: Stage, nbytes: int) -> None:
        if stage is not Stage.READ or self.fired:
            return
        self.read += nbytes
        if self.read < 2 << 20:
            return
        deadline = time.monotonic() + 10
        while len(object_puts(self.proxy, self.bucket)) < self.puts:  # type: ignore[arg-type]
            assert time.monotonic() < deadline, "no part went up"
            time.sleep(0.002)
        self.fired = True
        raise KeyboardInterrupt

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        pass


def test_interrupt_mid_stream_leaves_no_object(
    moto_s3: S3Server, make_proxy: MakeProxy, user_id: Identity, tmp_path: Path
) -> None:
    image = random_image(tmp_path / "img", 6 << 20)
    proxy = make_proxy(moto_s3.endpoint_url)
    progress = InterruptOnceUploaded(proxy, "ctrlc", 3)
    with pytest.raises(KeyboardInterrupt):
        upload_image(
            image, "ctrlc", settings_for(moto_s3, proxy.endpoint_url), user_id,
            part_size=64 * KiB, progress=progress,
        )  # fmt: skip
    assert progress.fired
    assert len(object_puts(proxy, "ctrlc")) >= 3
    assert object_bytes(moto_s3, "ctrlc") == {}
    assert not [t for t in threading.enumerate() if t.name.startswith("amibundle-s3")]


def test_server_gone_mid_stream_prints_the_keys_left(
    moto_s3: S3Server,
    make_proxy: MakeProxy,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint goes away after a few parts: the upload fails, the deletions fail
    too, and the command lists exactly the keys it left behind."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    image = random_image(tmp_path / "img", 6 << 20)
    proxy = make_proxy(moto_s3.endpoint_url)

    def stop_after_puts() -> None:
        while len(object_puts(proxy, "gone")) < 4:
            threading.Event().wait(0.002)
        proxy.stop()

    watcher = threading.Thread(target=stop_after_puts, daemon=True)
    watcher.start()
    status = main(
        [
            "bundle-upload", "-i", str(image), "-c", str(user_id.cert), "-k", str(user_id.key),
            "-u", "123456789012", "-r", "x86_64", "-b", "gone", "--part-size", "65536",
            "--url", proxy.endpoint_url, "-a", moto_s3.access_key, "-s", moto_s3.secret_key,
            "--region", "us-east-1", "--retry=1", "--jobs", "2",
        ]
    )  # fmt: skip
    watcher.join(5)
    err = capsys.readouterr().err
    assert status == 1, err
    lines = [line.strip() for line in err.splitlines() if line.startswith("  s3://gone/")]
    certain = {line[len("s3://gone/") :] for line in lines if not line.endswith(" (maybe)")}
    maybe = {line[len("s3://gone/") : -len(" (maybe)")] for line in lines if line.endswith(")")}
    assert certain, err
    assert "could not be deleted" in err.splitlines()[-1]
    # Every part S3 confirmed is listed as left; a failed PUT may or may not have landed.
    assert certain <= set(object_bytes(moto_s3, "gone")) <= certain | maybe


def test_bundle_upload_command_on_seaweedfs(
    seaweed_s3: S3Server,
    user_id: Identity,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = sample_image(tmp_path / "disk.img", mib=4)
    argv = [
        "-i", str(image), "-c", str(user_id.cert), "-k", str(user_id.key), "-u", "1234-5678-9012",
        "-r", "x86_64", "-b", "cmd/x/", "--url", seaweed_s3.endpoint_url, "-a",
        seaweed_s3.access_key, "-s", seaweed_s3.secret_key, "--part-size", "65536", "--batch",
    ]  # fmt: skip
    assert classic_main("ec2-bundle-and-upload-image", argv) == 0
    out = capsys.readouterr().out
    assert "ec2-bundle-and-upload-image complete" in out
    # A second run of the same name is refused, --force replaces it.
    assert classic_main("ec2-bundle-and-upload-image", argv) == 254
    assert "already exists" in capsys.readouterr().err
    assert classic_main("ec2-bundle-and-upload-image", [*argv, "--force"]) == 0
    restored = restore_from_bucket(seaweed_s3, "cmd/x", "disk.img", user_id, tmp_path)
    assert restored.read_bytes() == image.read_bytes()
    assert tree(tmp_path).count("disk.img") == 1  # nothing bundle-sized beside the image


def test_force_replaces_an_earlier_bundle_and_its_extra_parts(
    moto_s3: S3Server, user_id: Identity, tmp_path: Path
) -> None:
    settings = settings_for(moto_s3)
    big = random_image(tmp_path / "img", 200 * KiB, seed=1)
    first = upload_image(big, "replace", settings, user_id, part_size=16 * KiB)
    (tmp_path / "later").mkdir()
    small = random_image(tmp_path / "later" / "img", 40 * KiB, seed=2)
    second = upload_image(small, "replace", settings, user_id, part_size=16 * KiB, force=True)
    assert len(second.part_keys) < len(first.part_keys)
    assert sorted(object_bytes(moto_s3, "replace")) == sorted(
        ["img.manifest.xml", *second.part_keys]
    )
    assert set(second.replaced_keys) == set(first.part_keys) - set(second.part_keys)


def test_bundle_result_is_bundle_image_compatible(
    moto_s3: S3Server, user_id: Identity, tmp_path: Path
) -> None:
    """The same image bundled to disk and to S3 has the same tar digest and sizes."""
    image = sample_image(tmp_path / "disk.img", mib=2)
    (tmp_path / "out").mkdir()
    local = bundle_for(image, user_id, destination=tmp_path / "out")
    remote = upload_image(image, "same", settings_for(moto_s3), user_id)
    assert (remote.digest, remote.tar_size, remote.image_size) == (
        local.digest,
        local.tar_size,
        local.image_size,
    )
    assert remote.to_dict()["manifest_location"] == "same/disk.img.manifest.xml"


def test_sigint_to_the_command_mid_stream_leaves_no_object(
    moto_s3: S3Server, make_proxy: MakeProxy, user_id: Identity, tmp_path: Path
) -> None:
    """The real command, sent SIGINT (Ctrl-C) while parts are going up: exit 130 and
    an empty bucket."""
    image = random_image(tmp_path / "img", 40 << 20)
    proxy = make_proxy(moto_s3.endpoint_url)
    command = [
        str(AMIBUNDLE), "bundle-upload", "-i", str(image), "-c", str(user_id.cert), "-k",
        str(user_id.key), "-u", "123456789012", "-r", "x86_64", "-b", "sigint",
        "--part-size", str(1 << 20), "--url", proxy.endpoint_url, "-a", moto_s3.access_key,
        "-s", moto_s3.secret_key, "--region", "us-east-1", "-q",
    ]  # fmt: skip
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(object_puts(proxy, "sigint")) < 3 and process.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert len(object_puts(proxy, "sigint")) >= 3
    assert object_bytes(moto_s3, "sigint") == {}
