"""ec2-migrate-bundle / amibundle migrate-bundle against real S3 servers (moto and SeaweedFS),
through the recording proxy: parts move by server-side copy only (no part body passes
through the client), with the ACL, in parallel and resumably, the migrated manifest
last; source and destination may be reached through different endpoints and regions."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from amibundle.cli import classic_main, main
from amibundle.format.manifest_reader import parse
from amibundle.reading import check_signature
from tests.support.common import Identity
from tests.support.s3bundles import Bundle, make_bundle, object_bytes
from tests.support.s3proxy import Proxy, Recorded
from tests.support.s3servers import S3Server

MakeProxy = Callable[..., Proxy]
NAME = "img.manifest.xml"


# Nothing of the machine's AWS setup (profiles, endpoints, keys) reaches the commands.
pytestmark = pytest.mark.usefixtures("no_aws_config")


def uploaded_source(
    server: S3Server,
    tmp_path: Path,
    user: Identity,
    *,
    size: int,
    seed: int,
    region: str | None = None,
) -> Bundle:
    """A bundle uploaded to s3://src-bucket/old/ (not through any proxy)."""
    from amibundle import s3

    bundle = make_bundle(tmp_path, user, size=size, seed=seed)
    settings = s3.S3Settings(
        access_key=server.access_key,
        secret_key=server.secret_key,
        endpoint_url=server.endpoint_url,
        region=region,
    )
    s3.upload_bundle(bundle.manifest, "src-bucket/old", settings=settings)
    return bundle


@pytest.fixture
def source(s3_server: S3Server, tmp_path: Path, user_id: Identity) -> Bundle:
    """A five-part bundle in s3://src-bucket/old/."""
    return uploaded_source(s3_server, tmp_path, user_id, size=300_000, seed=7)


def argv(server: S3Server, user: Identity, url: str, *extra: str) -> list[str]:
    return [
        "-m",
        NAME,
        "-b",
        "src-bucket/old",
        "-d",
        "dst-bucket/new",
        "-c",
        str(user.cert),
        "-k",
        str(user.key),
        "-a",
        server.access_key,
        "-s",
        server.secret_key,
        "--url",
        url,
        "--no-mapping",
        *extra,
    ]


def part_requests(proxy: Proxy, bundle: Bundle) -> list[Recorded]:
    names = {p.name for p in bundle.parts}
    return [r for r in proxy.requests if r.path.rsplit("/", 1)[-1] in names]


def copies(proxy: Proxy) -> list[str]:
    return [
        r.path.rsplit("/", 1)[-1]
        for r in proxy.requests
        if r.method == "PUT" and "x-amz-copy-source" in r.headers
    ]


def test_parts_move_by_server_side_copy_only(
    s3_server: S3Server,
    source: Bundle,
    user_id: Identity,
    make_proxy: MakeProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = make_proxy(s3_server.endpoint_url)
    assert classic_main("ec2-migrate-bundle", argv(s3_server, user_id, proxy.endpoint_url)) == 0
    out = capsys.readouterr().out
    # Every part request was a lookup or a CopyObject: no part body went through us.
    for request in part_requests(proxy, source):
        assert request.method in ("HEAD", "PUT"), request
        if request.method == "PUT":
            assert request.headers["x-amz-copy-source"].endswith(
                f"src-bucket/old/{request.path.rsplit('/', 1)[-1]}"
            )
            assert request.headers.get("content-length", "0") == "0"
            assert request.headers["x-amz-acl"] == "aws-exec-read"
    assert sorted(copies(proxy)) == sorted(p.name for p in source.parts)
    # The migrated manifest went last, with the ACL.
    puts = [r for r in proxy.requests if r.method == "PUT" and r.path.startswith("/dst-bucket/")]
    assert (
        puts[-1].path == f"/dst-bucket/new/{NAME}"
        and puts[-1].headers["x-amz-acl"] == "aws-exec-read"
    )
    moved = object_bytes(s3_server, "dst-bucket", "new/")
    original = {f"new/{p.name}": p.read_bytes() for p in source.parts}
    assert {k: v for k, v in moved.items() if k != f"new/{NAME}"} == original
    migrated = parse(moved[f"new/{NAME}"])
    check_signature(migrated, user_id.cert)
    assert migrated.manifest.parts == parse(source.manifest.read_bytes()).manifest.parts
    assert "Copy complete: 5 parts copied, 0 already there" in out
    assert f"Your new bundle is in dst-bucket/new/{NAME}" in out


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_a_rerun_copies_only_what_is_missing_or_different(
    s3_server: S3Server,
    source: Bundle,
    user_id: Identity,
    make_proxy: MakeProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = make_proxy(s3_server.endpoint_url)
    words = argv(s3_server, user_id, proxy.endpoint_url)
    assert main(["migrate-bundle", *words]) == 0
    client = s3_server.client()
    gone, changed = source.parts[1].name, source.parts[3].name
    client.delete_object(Bucket="dst-bucket", Key=f"new/{gone}")
    client.put_object(Bucket="dst-bucket", Key=f"new/{changed}", Body=b"not the part")
    proxy.clear()
    capsys.readouterr()
    assert main(["migrate-bundle", *words]) == 0
    assert sorted(copies(proxy)) == sorted([gone, changed])
    assert "2 parts copied, 3 already there" in capsys.readouterr().out
    moved = object_bytes(s3_server, "dst-bucket", "new/")
    assert moved[f"new/{changed}"] == source.parts[3].read_bytes()


def test_source_and_destination_through_different_endpoints_and_regions(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity, make_proxy: MakeProxy
) -> None:
    bundle = uploaded_source(moto_s3, tmp_path, user_id, size=150_000, seed=3, region="us-west-2")
    here, there = make_proxy(moto_s3.endpoint_url), make_proxy(moto_s3.endpoint_url)
    words = argv(moto_s3, user_id, there.endpoint_url, "--source-url", here.endpoint_url)
    words += ["--source-region", "us-west-2", "--region", "eu-west-1"]
    assert classic_main("ec2-migrate-bundle", words) == 0
    assert (
        moto_s3.client().get_bucket_location(Bucket="dst-bucket")["LocationConstraint"]
        == "eu-west-1"
    )
    # The source endpoint was only read (manifest, part lookups) and signed for its region;
    # the destination's did the copies, signed for eu-west-1.
    assert {r.method for r in here.requests} <= {"GET", "HEAD"}
    assert all("/us-west-2/s3/" in r.headers["authorization"] for r in here.requests)
    assert copies(there) and all(
        "/eu-west-1/s3/" in r.headers["authorization"] for r in there.requests
    )
    assert object_bytes(moto_s3, "dst-bucket", "new/").keys() == {
        f"new/{p.name}" for p in (*bundle.parts, bundle.manifest)
    }


def test_a_missing_source_part_stops_before_anything_is_copied(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = uploaded_source(moto_s3, tmp_path, user_id, size=150_000, seed=4)
    client = moto_s3.client()
    client.delete_object(Bucket="src-bucket", Key=f"old/{bundle.parts[0].name}")
    assert classic_main("ec2-migrate-bundle", argv(moto_s3, user_id, moto_s3.endpoint_url)) == 3
    assert re.search(
        r"ERROR: part img\.part\.0 is not in s3://src-bucket/old/", capsys.readouterr().err
    )
    assert "dst-bucket" not in {b["Name"] for b in client.list_buckets()["Buckets"]}
    # A part of another size than the manifest says: 254, nothing copied either.
    client.put_object(Bucket="src-bucket", Key=f"old/{bundle.parts[0].name}", Body=b"short")
    assert classic_main("ec2-migrate-bundle", argv(moto_s3, user_id, moto_s3.endpoint_url)) == 254
    assert "the manifest says bundled_size" in capsys.readouterr().err


def test_a_destination_bucket_elsewhere_is_exit_10(
    moto_s3: S3Server, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    uploaded_source(moto_s3, tmp_path, user_id, size=70_000, seed=5)
    moto_s3.client().create_bucket(Bucket="dst-bucket")  # US Standard
    words = argv(moto_s3, user_id, moto_s3.endpoint_url, "--location", "EU")
    assert classic_main("ec2-migrate-bundle", words) == 10
    assert "bucket dst-bucket is in location US, not EU" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["-m", "img.manifest"], "a name ending in .manifest.xml"),
        (["-m", "a/img.manifest.xml"], "no '/'"),
    ],
)
def test_the_manifest_is_a_key_name(
    change: list[str],
    message: str,
    moto_s3: S3Server,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = argv(moto_s3, user_id, moto_s3.endpoint_url)
    words[words.index("-m") + 1] = change[1]
    assert classic_main("ec2-migrate-bundle", words) == 1
    assert message in capsys.readouterr().err
