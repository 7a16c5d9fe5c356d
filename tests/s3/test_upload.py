"""upload_bundle against real S3 servers: bucket creation, locations, Object
Ownership, the headers of every PUT, resume, --part/--skipmanifest, and what
is refused before a byte is sent.

Also home of the small helpers the other S3 suites import (bundles made with
amibundle.bundle_image, settings for a server or a proxy in front of it).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amibundle import s3
from amibundle.cli._errors import exit_code_for
from amibundle.cli._options import Style
from amibundle.errors import IntegrityError, StorageError
from amibundle.progress import Stage
from tests.support.common import Identity
from tests.support.errors import cli_hint
from tests.support.s3bundles import (
    MakeProxy,
    RaiseAfter,
    Recording,
    key_of,
    make_bundle,
    object_bytes,
    object_puts,
    settings_for,
)
from tests.support.s3proxy import Faults, Proxy
from tests.support.s3servers import S3Server

# --------------------------------------------------------------------------- tests


def test_every_put_carries_the_acl_and_content_md5_and_the_manifest_goes_last(
    s3_server: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id)
    assert len(bundle.parts) >= 4
    proxy = make_proxy(s3_server.endpoint_url)
    bucket = s3.parse_bucket("acl-bucket/images/v1/")
    progress = Recording()

    result = s3.upload_bundle(
        bundle.manifest,
        bucket,
        settings=settings_for(s3_server, proxy.endpoint_url, jobs=3),
        progress=progress,
    )

    puts = object_puts(proxy, "acl-bucket")
    assert [key_of(r.path, "acl-bucket") for r in puts][-1] == "images/v1/img.manifest.xml"
    assert sorted(key_of(r.path, "acl-bucket") for r in puts) == sorted(
        f"images/v1/{name}" for name in bundle.names
    )
    local = {p.name: p.read_bytes() for p in (*bundle.parts, bundle.manifest)}
    for request in puts:
        name = request.path.rsplit("/", 1)[1]
        assert request.headers["x-amz-acl"] == "aws-exec-read"
        # The body is not hashed again for the signature; its signed MD5 guards it.
        assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        assert "content-md5" in request.headers["authorization"].split("SignedHeaders=")[1]
        assert (
            request.headers["content-md5"]
            == base64.b64encode(hashlib.md5(local[name]).digest()).decode()
        )
    assert object_bytes(s3_server, "acl-bucket") == {
        f"images/v1/{name}": data for name, data in local.items()
    }
    assert result.parts_uploaded == len(bundle.parts) and result.parts_skipped == 0
    assert result.manifest_uploaded and result.bucket_created
    assert result.bytes_uploaded == sum(len(d) for d in local.values())
    assert progress.total(Stage.UPLOAD) == result.bytes_uploaded
    assert result.to_dict()["bucket"] == "acl-bucket"
    assert result.to_dict()["prefix"] == "images/v1/"


def test_other_acl_and_session_token_are_sent(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=100_000)
    proxy = make_proxy(moto_s3.endpoint_url)
    settings = s3.S3Settings(
        access_key="AKIDTEMPORARY",
        secret_key="temporary-secret",
        session_token="the-session-token",
        region="us-east-1",
        endpoint_url=proxy.endpoint_url,
    )
    s3.upload_bundle(
        bundle.manifest, s3.BucketRef("token-bucket"), settings=settings, acl="public-read"
    )
    assert proxy.requests
    for request in proxy.requests:
        assert request.headers["x-amz-security-token"] == "the-session-token"
        assert "AKIDTEMPORARY/" in request.headers["authorization"]
        assert "AWS4-HMAC-SHA256" in request.headers["authorization"]
    assert {r.headers["x-amz-acl"] for r in object_puts(proxy, "token-bucket")} == {"public-read"}


def test_new_bucket_lets_acls_work(s3_server: S3Server, tmp_path: Path, user_id: Identity) -> None:
    """A bucket the upload creates has Object Ownership BucketOwnerPreferred, even on a
    server that ignores the header on creation (SeaweedFS makes it BucketOwnerEnforced)."""
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    s3.upload_bundle(
        bundle.manifest, s3.BucketRef("fresh-bucket"), settings=settings_for(s3_server)
    )
    controls = s3_server.client().get_bucket_ownership_controls(Bucket="fresh-bucket")
    assert controls["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerPreferred"}]


@pytest.mark.parametrize(
    ("location", "reported"),
    [
        (None, None),
        ("US", None),
        ("EU", "eu-west-1"),
        ("eu-west-1", "eu-west-1"),
        ("us-west-2", "us-west-2"),
    ],
)
def test_bucket_is_created_in_the_requested_location(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity, location: str | None, reported: str | None
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    settings = settings_for(moto_s3, region=None)
    s3.upload_bundle(bundle.manifest, s3.BucketRef("located"), settings=settings, location=location)
    reply = moto_s3.client().get_bucket_location(Bucket="located")
    assert reply.get("LocationConstraint") == reported


def _bucket_in(server: S3Server, name: str, constraint: str | None) -> None:
    request: dict[str, Any] = {"Bucket": name}
    if constraint:
        request["CreateBucketConfiguration"] = {"LocationConstraint": constraint}
    server.client().create_bucket(**request)


@pytest.mark.parametrize(
    ("constraint", "location", "region"),
    [
        ("us-west-2", "eu-west-1", None),
        ("us-west-2", None, "ap-southeast-1"),
        (None, "EU", None),
        ("EU", "US", None),
        ("eu-west-1", "sa-east-1", None),
    ],
)
def test_location_mismatch_is_refused_before_any_put(
    moto_s3: S3Server,
    make_proxy: MakeProxy,
    tmp_path: Path,
    user_id: Identity,
    constraint: str | None,
    location: str | None,
    region: str | None,
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    _bucket_in(moto_s3, "elsewhere", constraint)
    proxy = make_proxy(moto_s3.endpoint_url)
    settings = settings_for(moto_s3, proxy.endpoint_url, region=region)
    with pytest.raises(s3.LocationMismatchError) as caught:
        s3.upload_bundle(
            bundle.manifest, s3.BucketRef("elsewhere"), settings=settings, location=location
        )
    message = str(caught.value)
    assert "\n" not in message and "elsewhere" in message
    assert (constraint or "US") in message and (location or region or "") in message
    assert exit_code_for(caught.value, Style.CLASSIC) == 10
    assert not [r for r in proxy.requests if r.method == "PUT"]


@pytest.mark.parametrize(
    ("constraint", "location", "region"),
    [
        ("EU", "eu-west-1", None),
        ("EU", "EU", None),
        ("eu-west-1", "EU", None),
        ("EU", None, "eu-west-1"),
        (None, "US", None),
        (None, None, "us-east-1"),
        ("us-west-2", None, "us-west-2"),
        ("us-west-2", None, "us-east-1"),  # us-east-1 asks for no location: nothing to check
    ],
)
def test_matching_location_is_accepted(
    moto_s3: S3Server,
    tmp_path: Path,
    user_id: Identity,
    constraint: str | None,
    location: str | None,
    region: str | None,
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    _bucket_in(moto_s3, "same-place", constraint)
    settings = settings_for(moto_s3, region=region)
    result = s3.upload_bundle(
        bundle.manifest, s3.BucketRef("same-place"), settings=settings, location=location
    )
    assert not result.bucket_created and result.manifest_uploaded


def test_bucket_owner_enforced_stops_before_any_object_put_and_fix_ownership_fixes_it(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=150_000)
    moto_s3.client().create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
    proxy = make_proxy(moto_s3.endpoint_url)
    settings = settings_for(moto_s3, proxy.endpoint_url)

    with pytest.raises(s3.AclsDisabledError) as caught:
        s3.upload_bundle(bundle.manifest, s3.BucketRef("enforced", "p/"), settings=settings)
    assert "BucketOwnerEnforced" in str(caught.value) and "EC2" in str(caught.value)
    assert "aws s3api put-bucket-ownership-controls --bucket enforced" in str(caught.value.hint)
    assert "fix_ownership=True" in str(caught.value.hint)
    assert "--fix-ownership" in str(cli_hint(caught, "upload"))
    assert not [r for r in proxy.requests if r.method in ("PUT", "POST")]
    assert object_bytes(moto_s3, "enforced") == {}

    result = s3.upload_bundle(
        bundle.manifest, s3.BucketRef("enforced", "p/"), settings=settings, fix_ownership=True
    )
    assert result.ownership_changed and result.parts_uploaded == len(bundle.parts)
    controls = moto_s3.client().get_bucket_ownership_controls(Bucket="enforced")
    assert controls["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerPreferred"}]
    # The ownership change came before the first object.
    methods = [(r.method, r.query) for r in proxy.requests if r.method == "PUT"]
    assert methods[0] == ("PUT", "ownershipControls")


def test_bucket_without_ownership_controls_is_used_as_is(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=70_000)
    moto_s3.client().create_bucket(Bucket="old-style")  # moto: no ownership controls at all
    result = s3.upload_bundle(
        bundle.manifest, s3.BucketRef("old-style"), settings=settings_for(moto_s3)
    )
    assert not result.ownership_changed and result.manifest_uploaded


def _interrupt_by_exception(proxy: Proxy, half: int) -> RaiseAfter:
    return RaiseAfter(Stage.UPLOAD, half)


def _interrupt_by_failing_server(proxy: Proxy, half: int) -> RaiseAfter:
    # From half-way on, the server answers every PUT with 500/503/SlowDown.
    return RaiseAfter(
        Stage.UPLOAD,
        half,
        lambda: proxy.set_faults(Faults(error_rate=1.0, methods=frozenset({"PUT"}))),
    )


@pytest.mark.parametrize(
    ("jobs", "interrupt"), [(3, _interrupt_by_exception), (1, _interrupt_by_failing_server)]
)
def test_interrupted_upload_resumes_sending_only_the_missing_parts(
    s3_server: S3Server,
    make_proxy: MakeProxy,
    tmp_path: Path,
    user_id: Identity,
    jobs: int,
    interrupt: Callable[[Proxy, int], RaiseAfter],
    fast_retries: None,
) -> None:
    # Progress reaches the listener in 1 MiB steps (BatchedProgress): a few MiB are needed.
    bundle = make_bundle(tmp_path, user_id, size=4 << 20, part_size=256 << 10)
    total = sum(p.stat().st_size for p in bundle.parts)
    proxy = make_proxy(s3_server.endpoint_url)
    settings = settings_for(s3_server, proxy.endpoint_url, jobs=jobs, attempts=2)
    bucket = s3.BucketRef("resume", "interrupted/")

    with pytest.raises((RaiseAfter.Interrupt, s3.S3Error)):
        s3.upload_bundle(
            bundle.manifest, bucket, settings=settings, progress=interrupt(proxy, total // 2)
        )
    there = object_bytes(s3_server, "resume", "interrupted/")
    assert "interrupted/img.manifest.xml" not in there  # never before every part is in
    assert 0 < len(there) < len(bundle.parts)

    proxy.set_faults(None)
    proxy.clear()
    result = s3.upload_bundle(bundle.manifest, bucket, settings=settings)
    sent = sorted(key_of(r.path, "resume") for r in object_puts(proxy, "resume"))
    missing = sorted(f"interrupted/{n}" for n in bundle.names if f"interrupted/{n}" not in there)
    assert sent == missing
    assert result.parts_skipped == len(there) and result.parts_uploaded == len(bundle.parts) - len(
        there
    )

    # The same bundle uploaded in one go, under another prefix, is byte for byte the same.
    s3.upload_bundle(
        bundle.manifest, s3.BucketRef("resume", "clean/"), settings=settings_for(s3_server)
    )
    resumed = {
        k.split("/", 1)[1]: v for k, v in object_bytes(s3_server, "resume", "interrupted/").items()
    }
    clean = {k.split("/", 1)[1]: v for k, v in object_bytes(s3_server, "resume", "clean/").items()}
    assert resumed == clean and sorted(resumed) == sorted(bundle.names)


def test_part_already_there_but_different_is_sent_again(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=200_000)
    client = moto_s3.client()
    client.create_bucket(Bucket="stale")
    first, second = bundle.parts[0], bundle.parts[1]
    client.put_object(Bucket="stale", Key=first.name, Body=first.read_bytes())  # identical
    client.put_object(
        Bucket="stale", Key=second.name, Body=b"x" * second.stat().st_size
    )  # same size
    proxy = make_proxy(moto_s3.endpoint_url)
    result = s3.upload_bundle(
        bundle.manifest, s3.BucketRef("stale"), settings=settings_for(moto_s3, proxy.endpoint_url)
    )
    sent = {key_of(r.path, "stale") for r in object_puts(proxy, "stale")}
    assert first.name not in sent and second.name in sent
    assert result.parts_skipped == 1
    assert object_bytes(moto_s3, "stale")[second.name] == second.read_bytes()


def test_first_part_and_skip_manifest(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=400_000)
    proxy = make_proxy(moto_s3.endpoint_url)
    result = s3.upload_bundle(
        bundle.manifest,
        s3.BucketRef("partial"),
        settings=settings_for(moto_s3, proxy.endpoint_url),
        first_part=3,
        skip_manifest=True,
    )
    sent = sorted(key_of(r.path, "partial") for r in object_puts(proxy, "partial"))
    assert sent == sorted(p.name for p in bundle.parts[3:])
    assert result.parts_before_first == 3 and not result.manifest_uploaded
    assert result.keys_uploaded == tuple(sorted(sent))


def test_damaged_part_is_never_sent(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=200_000)
    damaged = bundle.parts[1]
    data = bytearray(damaged.read_bytes())
    data[100] ^= 1
    damaged.write_bytes(bytes(data))
    proxy = make_proxy(moto_s3.endpoint_url)
    with pytest.raises(IntegrityError, match=damaged.name):
        s3.upload_bundle(
            bundle.manifest,
            s3.BucketRef("careful"),
            settings=settings_for(moto_s3, proxy.endpoint_url, jobs=1),
        )
    sent = {key_of(r.path, "careful") for r in object_puts(proxy, "careful")}
    assert damaged.name not in sent and bundle.manifest.name not in sent


def test_missing_part_is_found_before_any_request(
    moto_s3: S3Server, make_proxy: MakeProxy, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=200_000)
    bundle.parts[2].unlink()
    proxy = make_proxy(moto_s3.endpoint_url)
    with pytest.raises(StorageError, match=bundle.parts[2].name):
        s3.upload_bundle(
            bundle.manifest,
            s3.BucketRef("never"),
            settings=settings_for(moto_s3, proxy.endpoint_url),
        )
    assert proxy.requests == []


def test_parts_are_read_from_the_given_directory(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity
) -> None:
    bundle = make_bundle(tmp_path, user_id, size=100_000)
    elsewhere = tmp_path / "manifest-only"
    elsewhere.mkdir()
    manifest = elsewhere / bundle.manifest.name
    bundle.manifest.rename(manifest)
    result = s3.upload_bundle(
        manifest,
        s3.BucketRef("split-dirs"),
        settings=settings_for(moto_s3),
        directory=bundle.manifest.parent,
    )
    assert result.parts_uploaded == len(bundle.parts)
    with pytest.raises(StorageError):
        s3.upload_bundle(manifest, s3.BucketRef("split-dirs"), settings=settings_for(moto_s3))
