"""The S3 layer without a server: bucket arguments, regions and locations,
settings, the client's configuration, error messages, and the parallel engine."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import amibundle
from amibundle import s3
from amibundle.cli._errors import exit_code_for
from amibundle.cli._options import Style
from amibundle.errors import UsageError
from amibundle.s3 import client, engine
from amibundle.s3 import settings as s3_settings

# --------------------------------------------------------------------------- parse_bucket


@pytest.mark.parametrize(
    ("value", "bucket", "prefix"),
    [
        ("a1b/b/c/", "a1b", "b/c/"),
        ("/abc", "abc", ""),
        ("abc", "abc", ""),
        ("abc/", "abc", ""),
        ("abc/b", "abc", "b/"),
        ("//abc/b/c//", "abc", "b/c/"),
        ("my.bucket_name-1/images/2024", "my.bucket_name-1", "images/2024/"),
        ("Legacy-Bucket/x", "Legacy-Bucket", "x/"),
    ],
)
def test_parse_bucket_classic_rules(value: str, bucket: str, prefix: str) -> None:
    ref = s3.parse_bucket(value)
    assert ref == s3.BucketRef(bucket, prefix)
    assert ref.key("img.part.0") == prefix + "img.part.0"
    assert ref.url(ref.key("m")) == f"s3://{bucket}/{prefix}m"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/",
        "ab",  # too short
        "a" * 256,
        "-abc",
        "bad name",
        "bad?name",
        "192.168.1.1",
        "abc/a//b",  # empty component
        "abc/../b",
        "abc/./b",
        "abc/x/..",
        "abc/with\nnewline",
        "abc/tab\there",
    ],
)
def test_parse_bucket_refuses(value: str) -> None:
    with pytest.raises(UsageError) as caught:
        s3.parse_bucket(value)
    assert "\n" not in str(caught.value)


def test_bucket_ref_checks_what_it_is_given() -> None:
    with pytest.raises(UsageError):
        s3.BucketRef("ok-bucket", "a/../")
    with pytest.raises(UsageError):
        s3.BucketRef("x")
    # A prefix without a trailing slash is a file-name prefix: allowed.
    assert s3.BucketRef("ok-bucket", "a/pre").key("img") == "a/preimg"


_component = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="/\x7f"),
    min_size=1,
    max_size=8,
).filter(lambda c: c not in (".", ".."))
_bucket = st.from_regex(r"[a-z0-9][a-z0-9.\-_]{2,20}", fullmatch=True).filter(
    lambda b: not all(part.isdigit() for part in b.split(".")) or b.count(".") != 3
)


@settings(max_examples=60, deadline=None)
@given(_bucket, st.lists(_component, max_size=4))
def test_parse_bucket_keeps_every_component(bucket: str, components: list[str]) -> None:
    ref = s3.parse_bucket("/".join([bucket, *components]))
    assert ref.bucket == bucket
    assert ref.prefix == ("/".join(components) + "/" if components else "")
    # Every key lies under the prefix, and the prefix's folders are the components.
    assert ref.key("x.part.0").split("/")[:-1] == components


# --------------------------------------------------------------------------- regions


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://s3.amazonaws.com", "us-east-1"),
        ("https://s3-external-1.amazonaws.com", "us-east-1"),
        ("https://s3-eu-west-1.amazonaws.com", "eu-west-1"),
        ("https://s3.us-west-2.amazonaws.com", "us-west-2"),
        ("https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("https://s3.dualstack.ap-south-1.amazonaws.com", "ap-south-1"),
        ("http://127.0.0.1:9000", "us-east-1"),
        ("http://localhost:8333", "us-east-1"),
        ("https://s3.example.com", "us-east-1"),  # not AWS: no region "example"
        ("https://mybucket.s3.amazonaws.com", "us-east-1"),
    ],
)
def test_region_from_url(url: str, region: str) -> None:
    assert s3_settings.region_from_url(url) == region


@pytest.mark.parametrize(
    ("location", "region"),
    [("", "us-east-1"), ("US", "us-east-1"), ("EU", "eu-west-1"), ("eu-west-1", "eu-west-1")],
)
def test_region_of_location(location: str, region: str) -> None:
    assert s3_settings.region_of_location(location) == region


def test_region_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve = s3_settings.resolve_region
    aws = "https://s3-sa-east-1.amazonaws.com"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    monkeypatch.setenv("AWS_REGION", "us-west-1")
    explicit = s3.S3Settings(region="eu-central-1", endpoint_url=aws)
    assert resolve(explicit, location="EU", configured="x") == "eu-central-1"
    plain = s3.S3Settings(endpoint_url=aws)
    assert resolve(plain, location="EU", configured="x") == "eu-west-1"
    assert resolve(plain, configured="x") == "us-west-1"
    monkeypatch.delenv("AWS_REGION")
    assert resolve(plain, configured="x") == "ap-northeast-1"
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert resolve(plain, configured="ca-central-1") == "ca-central-1"
    assert resolve(plain) == "sa-east-1"
    assert resolve(s3.S3Settings()) == "us-east-1"


# --------------------------------------------------------------------------- settings and client


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": True},
        {"jobs": 0},
        {"jobs": 2.5},
        {"access_key": "a"},
        {"secret_key": "s"},
        {"session_token": "t"},
    ],
)
def test_settings_refuse_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        s3.S3Settings(**options)


def test_client_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    conn = client.connect(
        s3.S3Settings(
            access_key="AKID",
            secret_key="secret",
            session_token="token",
            endpoint_url="http://127.0.0.1:9",
            attempts=5,
            jobs=3,
        )
    )
    config = conn.client.meta.config
    assert config.signature_version == "s3v4"
    assert config.retries == {"total_max_attempts": 5, "mode": "standard"}
    assert config.max_pool_connections == 7
    assert config.s3 == {"addressing_style": "path", "payload_signing_enabled": False}
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert conn.client.meta.region_name == "us-east-1"
    credentials = conn.client._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key, credentials.token) == (
        "AKID",
        "secret",
        "token",
    )


def test_addressing_style_left_to_boto3_without_an_endpoint() -> None:
    conn = client.connect(s3.S3Settings(access_key="a", secret_key="b", region="eu-west-1"))
    assert conn.client.meta.config.s3 == {"payload_signing_enabled": False}
    assert conn.client.meta.region_name == "eu-west-1"


def test_unknown_profile_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(s3.S3CredentialsError, match="'nobody'"):
        client.connect(s3.S3Settings(profile="nobody"))


# --------------------------------------------------------------------------- error messages


def _client_error(code: str, status: int, message: str = "", retries: int = 0) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries},
        },
        "PutObject",
    )


def test_error_messages_name_operation_code_and_status() -> None:
    what = "upload img.part.03 to s3://b/p/img.part.03"
    err = client.s3_failure(what, _client_error("AccessDenied", 403, "Access Denied"))
    assert type(err) is s3.S3Error
    assert str(err) == f"cannot {what}: AccessDenied (403): Access Denied"
    assert err.hint and "permission" in err.hint
    err = client.s3_failure(what, _client_error("SlowDown", 503, "Reduce\nyour rate", retries=2))
    assert str(err) == f"cannot {what}: SlowDown (503) after 3 attempts: Reduce your rate"
    err = client.s3_failure("look up x", _client_error("404", 404, "Not Found"))
    assert str(err) == "cannot look up x: 404 (404): Not Found"


@pytest.mark.parametrize(
    "code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"]
)
def test_refused_credentials_get_their_own_error(code: str) -> None:
    err = client.s3_failure("download x", _client_error(code, 403))
    assert isinstance(err, s3.S3CredentialsError)
    assert str(err).startswith(f"cannot download x: S3 refused the credentials ({code} (403)")
    err = client.s3_failure("download x", NoCredentialsError())
    assert isinstance(err, s3.S3CredentialsError) and "no AWS credentials" in str(err)


def test_missing_bucket_gets_its_own_error() -> None:
    err = client.s3_failure("download x", _client_error("NoSuchBucket", 404))
    assert isinstance(err, s3.NoSuchBucketError) and "bucket does not exist" in str(err)


def test_connection_errors_are_one_line() -> None:
    conn = client.Connection(None, "us-east-1", s3.S3Settings(attempts=4))
    err = client.s3_failure("get x", EndpointConnectionError(endpoint_url="http://h:1/b"), conn)
    assert str(err) == "cannot get x: cannot connect to http://h:1/b (after 4 attempts)"
    err = client.s3_failure("get x", ReadTimeoutError(endpoint_url="http://h:1/b"), conn)
    assert "\n" not in str(err) and "Read timeout" in str(err)


def test_exit_codes() -> None:
    for cls in (s3.AclsDisabledError, s3.S3CredentialsError, s3.NoSuchBucketError):
        assert issubclass(cls, s3.S3Error)
        assert exit_code_for(cls("x"), Style.CLASSIC) == 3
    assert exit_code_for(s3.LocationMismatchError("x"), Style.CLASSIC) == 10
    assert exit_code_for(s3.S3Error("x"), Style.CLASSIC) == 3
    assert exit_code_for(s3.S3Error("x"), Style.MODERN) == 1


def test_public_names() -> None:
    for name in (
        "S3Settings",
        "BucketRef",
        "parse_bucket",
        "S3Error",
        "LocationMismatchError",
        "AclsDisabledError",
        "upload_bundle",
        "download_bundle",
        "delete_bundle",
        "UploadResult",
        "DownloadResult",
        "DeleteResult",
    ):
        assert getattr(amibundle, name) is getattr(s3, name)
        assert name in amibundle.__all__ and name in s3.__all__


# --------------------------------------------------------------------------- the engine


def test_run_parallel_keeps_order() -> None:
    def task(i: int) -> Any:
        def run() -> int:
            time.sleep(0.001 * (10 - i))
            return i

        return run

    assert engine.run_parallel(
        [task(i) for i in range(10)], jobs=4, stop=threading.Event()
    ) == list(range(10))


def test_first_failure_stops_the_rest() -> None:
    started: list[int] = []
    stop = threading.Event()

    class Boom(Exception):
        pass

    def task(i: int) -> Any:
        def run() -> int:
            started.append(i)
            if i == 2:
                raise Boom
            if i < 2:
                return i
            # Running tasks see the stop flag and end early.
            if stop.wait(5):
                raise engine.Stopped
            return i

        return run

    began = time.monotonic()
    with pytest.raises(Boom):
        engine.run_parallel([task(i) for i in range(50)], jobs=3, stop=stop)
    assert stop.is_set() and time.monotonic() - began < 4
    assert len(started) < 10  # queued tasks were cancelled


def test_upload_body_reports_only_while_sending_and_takes_back_on_rewind() -> None:
    reported: list[int] = []
    body = engine.UploadBody(
        io.BytesIO(b"x" * 100), on_bytes=reported.append, stop=threading.Event()
    )
    assert body.read() == b"x" * 100  # the signer hashing the body: not counted
    body.seek(0)
    body.signal_sending(True)
    body.read(60)
    body.read(60)
    assert reported == [60, 40]
    body.seek(0)  # a retry
    assert reported == [60, 40, -100]
    body.read()
    assert sum(reported) == 100


def test_upload_body_keeps_a_progress_failure_and_stops() -> None:
    class Broken(Exception):
        pass

    def explode(n: int) -> None:
        raise Broken

    stop = threading.Event()
    body = engine.UploadBody(io.BytesIO(b"abc"), on_bytes=explode, stop=stop)
    body.signal_sending(True)
    with pytest.raises(engine.Stopped):
        body.read(1)
    assert isinstance(body.failure, Broken)
    quiet = engine.UploadBody(io.BytesIO(b"abc"), on_bytes=lambda n: None, stop=stop)
    stop.set()
    with pytest.raises(engine.Stopped):
        quiet.read(1)


def test_acl_and_first_part_are_checked_before_anything(tmp_path: Any) -> None:
    with pytest.raises(UsageError, match="unknown ACL"):
        s3.upload_bundle(
            tmp_path / "m", s3.BucketRef("abc"), settings=s3.S3Settings(), acl="authenticated"
        )
    with pytest.raises(UsageError, match="first_part="):
        s3.upload_bundle(
            tmp_path / "m", s3.BucketRef("abc"), settings=s3.S3Settings(), first_part=-1
        )
