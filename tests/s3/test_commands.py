"""The S3 commands, run in-process through ``amibundle.cli.main``/``classic_main``, against
real S3 servers on 127.0.0.1 (moto and SeaweedFS, from tests/s3/conftest.py).

What a user sees: a bundle uploaded by ``ec2-upload-bundle`` and fetched by
``amibundle download`` unbundles to the original image; a delete answered "no" deletes
nothing, ``-y``/``--batch`` delete exactly the bundle; exit 10 for a location mismatch;
exit 3 and one clear line for a bucket with ACLs disabled (with the fix command), an
unknown bucket and refused credentials.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from amibundle.cli import classic_main, main
from tests.support.bundling import bundle_for
from tests.support.common import Identity, tree
from tests.support.s3proxy import Proxy
from tests.support.s3servers import S3Server

KiB = 1024
MakeProxy = Callable[..., Proxy]


@dataclass(frozen=True)
class Bundle:
    image: Path
    manifest: Path
    parts: tuple[Path, ...]

    @property
    def names(self) -> list[str]:
        return [self.manifest.name, *(p.name for p in self.parts)]


# Nothing of the machine's AWS setup (profiles, endpoints, keys) reaches the commands.
pytestmark = pytest.mark.usefixtures("no_aws_config")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity) -> Bundle:
    """A small real bundle in several parts (random data: gzip cannot shrink it)."""
    folder = tmp_path_factory.mktemp("bundle")
    image = folder / "disk.img"
    image.write_bytes(os.urandom(200 * KiB))
    (folder / "out").mkdir()
    result = bundle_for(
        image, user_id, ec2_cert=ec2_id.cert, destination=folder / "out", part_size=48 * KiB
    )
    return Bundle(image, result.manifest_path, tuple(result.part_paths))


def keys_of(server: S3Server, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def creds(server: S3Server, url: str | None = None) -> list[str]:
    return ["-a", server.access_key, "-s", server.secret_key, "--url", url or server.endpoint_url]


def upload(server: S3Server, bundle: Bundle, bucket: str, *extra: str) -> int:
    return classic_main(
        "ec2-upload-bundle", ["-b", bucket, "-m", str(bundle.manifest), *creds(server), *extra]
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- round trip ---------------------------------------------------------------------------


def test_round_trip_upload_download_unbundle(
    s3_server: S3Server,
    bundle: Bundle,
    user_id: Identity,
    tmp_path: Path,
    make_proxy: MakeProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = make_proxy(s3_server.endpoint_url)
    assert len(bundle.parts) >= 4
    status = classic_main(
        "ec2-upload-bundle",
        [
            "--buck",
            "rt-bucket/images/v1",
            "-m",
            str(bundle.manifest),
            "--jobs=3",
            *creds(s3_server, proxy.endpoint_url),
        ],
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert keys_of(s3_server, "rt-bucket") == sorted(f"images/v1/{n}" for n in bundle.names)
    assert f"{len(bundle.parts)} parts uploaded, 0 already there" in out.splitlines()[-1]
    # Every object went up with the canned ACL EC2 needs; the manifest last.
    puts = [r for r in proxy.requests if r.method == "PUT" and "/images/v1/" in r.path]
    assert len(puts) == len(bundle.names)
    assert all(r.headers.get("x-amz-acl") == "aws-exec-read" for r in puts)
    assert puts[-1].path.endswith(bundle.manifest.name)

    fetched = tmp_path / "fetched"
    fetched.mkdir()
    assert (
        main(
            [
                "download",
                "-b",
                "rt-bucket/images/v1/",
                "-p",
                "disk.img",
                "-d",
                str(fetched),
                "--json",
                *creds(s3_server),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["parts_downloaded"] == len(bundle.parts)
    assert tree(fetched) == sorted(bundle.names)
    for name in bundle.names:
        assert digest(fetched / name) == digest(bundle.manifest.parent / name)

    restored = tmp_path / "restored"
    restored.mkdir()
    manifest = fetched / bundle.manifest.name
    assert (
        classic_main(
            "ec2-unbundle",
            ["-m", str(manifest), "-k", str(user_id.key), "-s", str(fetched), "-d", str(restored)],
        )
        == 0
    )
    assert digest(restored / "disk.img") == digest(bundle.image)


def test_upload_again_sends_only_what_is_missing(
    s3_server: S3Server, bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upload(s3_server, bundle, "resume-bucket") == 0
    s3_server.client().delete_object(Bucket="resume-bucket", Key=bundle.parts[1].name)
    capsys.readouterr()
    assert upload(s3_server, bundle, "resume-bucket", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["parts_uploaded"], summary["parts_skipped"]) == (1, len(bundle.parts) - 1)
    assert keys_of(s3_server, "resume-bucket") == sorted(bundle.names)


# -- delete -------------------------------------------------------------------------------


@pytest.fixture
def two_bundles(s3_server: S3Server, bundle: Bundle, tmp_path: Path) -> list[str]:
    """The bundle under two prefixes of one bucket, plus an unrelated object beside it."""
    assert upload(s3_server, bundle, "del-bucket/a") == 0
    assert upload(s3_server, bundle, "del-bucket/b") == 0
    s3_server.client().put_object(Bucket="del-bucket", Key="a/disk.img.part.99", Body=b"not mine")
    return keys_of(s3_server, "del-bucket")


@pytest.mark.parametrize("answer", ["n\n", ""], ids=["no", "eof"])
def test_declined_delete_deletes_nothing(
    answer: str,
    s3_server: S3Server,
    two_bundles: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    argv = ["-b", "del-bucket/a", "-p", "disk.img", "--clear", *creds(s3_server)]
    assert classic_main("ec2-delete-bundle", argv) == 8
    captured = capsys.readouterr()
    assert "continue? [y/N]" in captured.out
    assert "nothing deleted" in captured.err
    assert keys_of(s3_server, "del-bucket") == two_bundles  # --clear not done either


@pytest.mark.parametrize("flag", ["-y", "--batch"])
def test_delete_removes_exactly_the_bundle(
    flag: str,
    s3_server: S3Server,
    bundle: Bundle,
    two_bundles: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))  # not asked, so not read
    argv = ["-b", "del-bucket/a", "-m", str(bundle.manifest), flag, *creds(s3_server)]
    assert classic_main("ec2-delete-bundle", argv) == 0
    assert "continue?" not in capsys.readouterr().out
    gone = {f"a/{name}" for name in bundle.names}
    assert keys_of(s3_server, "del-bucket") == sorted(set(two_bundles) - gone)
    assert "a/disk.img.part.99" in keys_of(s3_server, "del-bucket")


def test_delete_clear_keeps_a_bucket_that_is_not_empty_then_removes_an_empty_one(
    s3_server: S3Server,
    two_bundles: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["-b", "del-bucket/b", "-p", "disk.img", "--clear", "--batch", *creds(s3_server)]
    assert classic_main("ec2-delete-bundle", base) == 3
    err = capsys.readouterr().err.splitlines()
    # Both halves in one line: the bundle is gone, the bucket is kept.
    assert re.fullmatch(
        r"ERROR: deleted the bundle \(\d+ objects from s3://del-bucket/b/\), but kept "
        r"bucket del-bucket: it is not empty \(it holds a/.*\)",
        err[0],
    ), err[0]
    assert err[1] == "hint: delete what else it holds first, or leave out --clear"
    assert not any(key.startswith("b/") for key in keys_of(s3_server, "del-bucket"))

    client = s3_server.client()
    client.put_object(Bucket="del-bucket", Key="a/disk.img.part.99", Body=b"")
    assert main(["delete", "-b", "del-bucket/a", "-p", "disk.img", "-y", *creds(s3_server)]) == 0
    client.delete_object(Bucket="del-bucket", Key="a/disk.img.part.99")
    assert keys_of(s3_server, "del-bucket") == []
    # Nothing left to name the keys: the manifest is gone, so -p fails with exit 3 ...
    assert classic_main("ec2-delete-bundle", base) == 3
    assert "no bundle manifest" in capsys.readouterr().err
    names = [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert "del-bucket" in names


def test_delete_clear_removes_the_emptied_bucket(
    s3_server: S3Server, bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upload(s3_server, bundle, "clear-bucket") == 0
    argv = ["-b", "clear-bucket", "-m", str(bundle.manifest), "--clear", "-y", *creds(s3_server)]
    assert main(["delete", *argv]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "Removed bucket clear-bucket"
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert "clear-bucket" not in names


# -- the errors a user meets ------------------------------------------------------------------


def test_location_mismatch_exits_10(
    moto_s3: S3Server, bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    moto_s3.client().create_bucket(
        Bucket="eu-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    assert upload(moto_s3, bundle, "eu-bucket", "--location", "us-west-2") == 10
    err = capsys.readouterr().err.splitlines()
    assert "eu-bucket" in err[0] and "eu-west-1" in err[0] and "us-west-2" in err[0]
    assert keys_of(moto_s3, "eu-bucket") == []
    # The right location (either spelling) goes through.
    assert upload(moto_s3, bundle, "eu-bucket", "--location", "EU") == 0
    assert (
        main(
            [
                "upload",
                "-b",
                "eu-bucket",
                "-m",
                str(bundle.manifest),
                "--region",
                "eu-west-1",
                *creds(moto_s3),
            ]
        )
        == 0
    )


def test_acls_disabled_stops_before_any_byte_and_says_how_to_fix(
    moto_s3: S3Server,
    bundle: Bundle,
    make_proxy: MakeProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    moto_s3.client().create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
    proxy = make_proxy(moto_s3.endpoint_url)
    argv = ["-b", "enforced", "-m", str(bundle.manifest), *creds(moto_s3, proxy.endpoint_url)]
    assert classic_main("ec2-upload-bundle", argv) == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("ERROR: bucket enforced has Object Ownership BucketOwnerEnforced")
    assert "EC2 could not read" in err[0]
    assert err[1].startswith("hint: ")
    assert "aws s3api put-bucket-ownership-controls --bucket enforced" in err[1]
    assert "--fix-ownership" in err[1]
    assert not [r for r in proxy.requests if r.method == "PUT"]
    assert keys_of(moto_s3, "enforced") == []

    assert main(["upload", *argv, "--fix-ownership"]) == 0
    assert keys_of(moto_s3, "enforced") == sorted(bundle.names)


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("ec2-download-bundle", ["-p", "disk.img", "-d", "{tmp}"]),
        ("ec2-delete-bundle", ["-p", "disk.img", "-y"]),
    ],
)
def test_unknown_bucket_is_exit_3_and_one_line(
    command: str,
    argv: list[str],
    s3_server: S3Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    words = [w.format(tmp=tmp_path) for w in argv]
    assert classic_main(command, ["-b", "no-such-bucket", *words, *creds(s3_server)]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ERROR: ") and "no-such-bucket" in err[0]
    assert len(err) <= 2 and all(line.startswith(("ERROR: ", "hint: ")) for line in err)
    assert tree(tmp_path) == []


def test_refused_credentials_are_exit_3_and_one_line(
    seaweed_s3: S3Server, bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "-b",
        "any-bucket",
        "-m",
        str(bundle.manifest),
        "-a",
        seaweed_s3.access_key,
        "-s",
        "wrong-secret",
        "--url",
        seaweed_s3.endpoint_url,
    ]
    assert classic_main("ec2-upload-bundle", argv) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ERROR: ") and len(err) <= 2
    assert "Traceback" not in "\n".join(err)
    assert main(["upload", *argv]) == 1
