"""Transfers through a proxy that answers 500/503/SlowDown and resets
connections still end in a complete, verified bundle; refused credentials,
unknown buckets and unreachable endpoints end in one clear error each."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import amibundle
from amibundle import s3
from amibundle.cli._errors import exit_code_for
from amibundle.cli._options import Style
from amibundle.s3 import remote
from tests.support.common import Identity
from tests.support.s3bundles import MakeProxy, make_bundle, object_bytes, object_puts, settings_for
from tests.support.s3proxy import Faults
from tests.support.s3servers import S3Server, SeaweedServer


@pytest.fixture
def no_stream_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies cut off mid-stream are fetched again at once (botocore's own
    retries are made immediate by the `fast_retries` fixture)."""
    monkeypatch.setattr(remote, "retry_delay", lambda attempt: 0.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_faults_still_end_in_a_complete_verified_bundle(
    s3_server: S3Server,
    make_proxy: MakeProxy,
    tmp_path: Path,
    user_id: Identity,
    fast_retries: None,
    no_stream_backoff: None,
    seed: int,
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=900_000, seed=seed)
    proxy = make_proxy(s3_server.endpoint_url, Faults(error_rate=0.2, reset_rate=0.15, seed=seed))
    # 35% of requests fail; 8 attempts make a request failing for good unlikely (3e-4).
    settings = settings_for(s3_server, proxy.endpoint_url, attempts=8, jobs=4)
    bucket = s3.BucketRef("faulty", "p/")

    s3.upload_bundle(bundle.manifest, bucket, settings=settings)
    target = tmp_path / "downloaded"
    target.mkdir()
    result = s3.download_bundle(
        bucket, settings=settings, manifest_name="img.manifest.xml", directory=target
    )
    s3.delete_bundle(s3.BucketRef("faulty", "p/"), settings=settings, prefix="img")

    assert proxy.faults_injected >= 5
    kinds = {r.fault for r in proxy.requests if r.fault}
    assert kinds & {"drop", "cut"} and kinds & {"500", "503", "SlowDown"}
    report = amibundle.verify_bundle(
        result.manifest_path, cert=user_id.cert, private_key=user_id.key
    )
    assert report.ok, report.problems
    restored = tmp_path / "restored"
    restored.mkdir()
    image = amibundle.unbundle(result.manifest_path, private_key=user_id.key, destination=restored)
    assert image.image_path.read_bytes() == bundle.image.read_bytes()
    proxy.set_faults(None)
    assert object_bytes(s3_server, "faulty") == {}


def test_cut_downloads_are_fetched_again(
    moto_s3: S3Server,
    make_proxy: MakeProxy,
    tmp_path: Path,
    user_id: Identity,
    no_stream_backoff: None,
) -> None:
    """A GET whose body is cut half-way is not retried by botocore (the answer had
    begun); the download fetches the part again itself."""
    bundle = make_bundle(tmp_path, user_id, size=300_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("cut"), settings=settings_for(moto_s3))
    proxy = make_proxy(
        moto_s3.endpoint_url, Faults(reset_rate=0.5, methods=frozenset({"GET"}), seed=3)
    )
    target = tmp_path / "downloaded"
    target.mkdir()
    result = s3.download_bundle(
        s3.BucketRef("cut"),
        settings=settings_for(moto_s3, proxy.endpoint_url, attempts=10),
        manifest_name="img.manifest.xml",
        directory=target,
    )
    assert any(r.fault == "cut" for r in proxy.requests)
    assert result.parts_downloaded == len(bundle.parts)
    for part in bundle.parts:
        assert (target / part.name).read_bytes() == part.read_bytes()


def test_persistent_server_errors_fail_with_the_status_and_no_manifest(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity, fast_retries: None
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=150_000)
    moto_s3.client().create_bucket(Bucket="broken")
    proxy = make_proxy(moto_s3.endpoint_url)
    proxy.set_faults(Faults(error_rate=1.0, methods=frozenset({"PUT"})))
    with pytest.raises(s3.S3Error) as caught:
        s3.upload_bundle(
            bundle.manifest,
            s3.BucketRef("broken"),
            settings=settings_for(moto_s3, proxy.endpoint_url, attempts=2),
        )
    message = str(caught.value)
    assert message.startswith("cannot upload img.part.") and "s3://broken/img.part." in message
    assert any(
        f"{code} (" in message for code in ("InternalError", "ServiceUnavailable", "SlowDown")
    )
    assert "after 2 attempts" in message and "\n" not in message
    assert not [r for r in object_puts(proxy, "broken") if r.path.endswith(".manifest.xml")]


@pytest.mark.parametrize("wrong", ["secret", "access"])
def test_refused_credentials_are_one_clear_error(
    seaweed_s3: SeaweedServer, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity, wrong: str
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("guarded"), settings=settings_for(seaweed_s3))
    proxy = make_proxy(seaweed_s3.endpoint_url)
    settings = s3.S3Settings(
        access_key="AKIDNOSUCHKEY" if wrong == "access" else seaweed_s3.access_key,
        secret_key="not-the-secret" if wrong == "secret" else seaweed_s3.secret_key,
        region=seaweed_s3.region,
        endpoint_url=proxy.endpoint_url,
    )
    target = tmp_path / "downloaded"
    target.mkdir()
    calls = {
        "upload": lambda: s3.upload_bundle(
            bundle.manifest, s3.BucketRef("guarded", "new/"), settings=settings
        ),
        "download": lambda: s3.download_bundle(
            s3.BucketRef("guarded"),
            settings=settings,
            manifest_name="img.manifest.xml",
            directory=target,
        ),
        "delete": lambda: s3.delete_bundle(
            s3.BucketRef("guarded"), settings=settings, manifest=bundle.manifest
        ),
    }
    for name, call in calls.items():
        with pytest.raises(s3.S3CredentialsError) as caught:
            call()
        message = str(caught.value)
        assert "refused the credentials" in message and "\n" not in message, name
        expected = "InvalidAccessKeyId" if wrong == "access" else "SignatureDoesNotMatch"
        assert f"{expected} (403)" in message, name
        assert caught.value.hint and "access key" in caught.value.hint
    # Refused at the first request: nothing was written, nothing deleted.
    assert not [r for r in proxy.requests if r.method in ("PUT", "DELETE")] or all(
        r.path.count("/") == 1 for r in proxy.requests if r.method == "PUT"
    )
    assert list(target.iterdir()) == []
    assert set(object_bytes(seaweed_s3, "guarded")) == set(bundle.names)


def test_unknown_bucket_is_one_clear_error(s3_server: S3Server, tmp_path: Path) -> None:
    with pytest.raises(s3.NoSuchBucketError) as caught:
        s3.download_bundle(
            s3.BucketRef("no-such-bucket", "p/"),
            settings=settings_for(s3_server),
            manifest_name="img.manifest.xml",
            directory=tmp_path,
        )
    message = str(caught.value)
    assert message.startswith(
        "cannot download the manifest s3://no-such-bucket/p/img.manifest.xml: "
        "the bucket does not exist"
    )
    assert "\n" not in message and exit_code_for(caught.value, Style.CLASSIC) == 3


def test_unreachable_endpoint_is_one_clear_error(tmp_path: Path, user_id: Identity) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    settings = s3.S3Settings(
        access_key="a",
        secret_key="b",
        region="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        attempts=1,
    )
    with pytest.raises(s3.S3Error) as caught:
        s3.upload_bundle(bundle.manifest, s3.BucketRef("anywhere"), settings=settings)
    assert str(caught.value) == (
        f"cannot look up bucket anywhere: cannot connect to "
        f"http://127.0.0.1:{port}/anywhere?location (after 1 attempt)"
    )
