"""The S3 test infrastructure itself: both servers, reset, and the recording/faulting proxy.

These tests prove what the transfer suites rely on: objects survive a round trip through
the proxy on both servers, the proxy records what the client sent, faults arrive at the
configured rates and botocore's retries get through them, SeaweedFS refuses bad keys, and
moto keeps bucket locations and ownership controls.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import threading
import tracemalloc
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError, ResponseStreamingError

from tests.support.s3proxy import FAULT_KINDS, Faults, Proxy
from tests.support.s3servers import MotoServer, S3Server, SeaweedServer

MiB = 1024 * 1024
MakeProxy = Callable[..., Proxy]


def _host_port(endpoint_url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(endpoint_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _error_code(error: ClientError) -> tuple[str, int]:
    response = error.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- both servers, through the proxy ------------------------------------------------------


def test_twenty_mib_round_trip_through_proxy(s3_server: S3Server, make_proxy: MakeProxy) -> None:
    data = os.urandom(20 * MiB)
    md5 = hashlib.md5(data).digest()
    s3_server.client().create_bucket(Bucket="infra-round-trip")
    proxy = make_proxy(s3_server.endpoint_url)
    client = s3_server.client(proxy.endpoint_url)

    client.put_object(
        Bucket="infra-round-trip",
        Key="dir/img.part.00",
        Body=data,
        ACL="aws-exec-read",
        ContentMD5=base64.b64encode(md5).decode(),
    )
    head = client.head_object(Bucket="infra-round-trip", Key="dir/img.part.00")
    body = client.get_object(Bucket="infra-round-trip", Key="dir/img.part.00")["Body"].read()
    client.delete_object(Bucket="infra-round-trip", Key="dir/img.part.00")
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket="infra-round-trip", Key="dir/img.part.00")

    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"') == md5.hex()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
    assert _error_code(missing.value)[1] == 404
    recorded = proxy.requests
    assert [(r.method, r.path) for r in recorded] == [
        ("PUT", "/infra-round-trip/dir/img.part.00"),
        ("HEAD", "/infra-round-trip/dir/img.part.00"),
        ("GET", "/infra-round-trip/dir/img.part.00"),
        ("DELETE", "/infra-round-trip/dir/img.part.00"),
        ("HEAD", "/infra-round-trip/dir/img.part.00"),
    ]
    put = recorded[0]
    assert put.headers["x-amz-acl"] == "aws-exec-read"
    assert put.headers["Content-MD5"] == base64.b64encode(md5).decode()  # any case works
    assert put.headers["content-length"] == str(len(data))
    assert put.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
    # The Host header reaches the server unchanged (SigV4 signs it; SeaweedFS checks it).
    assert put.headers["host"] == proxy.endpoint_url.removeprefix("http://")
    assert all(r.fault == "" for r in recorded)
    assert proxy.faults_injected == 0


def test_reset_empties_the_server(s3_server: S3Server) -> None:
    client = s3_server.client()
    for bucket in ("infra-reset-a", "infra-reset-b"):
        client.create_bucket(Bucket=bucket)
        for index in range(3):
            client.put_object(Bucket=bucket, Key=f"p/{index}", Body=b"x" * index)

    s3_server.reset()

    assert client.list_buckets()["Buckets"] == []


@pytest.mark.usefixtures("fast_retries")
def test_boto3_retries_get_through_errors(s3_server: S3Server, make_proxy: MakeProxy) -> None:
    s3_server.client().create_bucket(Bucket="infra-errors")
    proxy = make_proxy(s3_server.endpoint_url, Faults(error_rate=0.3, seed=7))
    client = s3_server.client(proxy.endpoint_url, max_attempts=10)
    objects = {f"k{index}": os.urandom(1000 + index) for index in range(12)}

    for key, data in objects.items():
        client.put_object(Bucket="infra-errors", Key=key, Body=data)
    fetched = {
        key: client.get_object(Bucket="infra-errors", Key=key)["Body"].read() for key in objects
    }

    assert fetched == objects
    recorded = proxy.requests
    faulted = [r.fault for r in recorded if r.fault]
    assert proxy.faults_injected == len(faulted) > 0
    assert set(faulted) <= {"500", "503", "SlowDown"}
    # Every request beyond the 24 needed is a retry of a faulted one.
    assert len(recorded) == 24 + len(faulted)


@pytest.mark.usefixtures("fast_retries")
def test_parallel_transfers_through_faults(s3_server: S3Server, make_proxy: MakeProxy) -> None:
    """Twelve threads on one client, as the tool's workers are, with errors injected."""
    s3_server.client().create_bucket(Bucket="infra-parallel")
    proxy = make_proxy(s3_server.endpoint_url, Faults(error_rate=0.2, seed=2))
    client = s3_server.client(proxy.endpoint_url, max_attempts=10)
    objects = {f"part.{index:02d}": os.urandom(200_000 + index) for index in range(24)}

    def round_trip(key: str) -> bytes:
        client.put_object(Bucket="infra-parallel", Key=key, Body=objects[key])
        body: bytes = client.get_object(Bucket="infra-parallel", Key=key)["Body"].read()
        return body

    with ThreadPoolExecutor(max_workers=12) as pool:
        fetched = dict(zip(objects, pool.map(round_trip, objects), strict=True))

    assert fetched == objects
    assert proxy.faults_injected > 0
    assert len(proxy.requests) == 2 * len(objects) + proxy.faults_injected


@pytest.mark.usefixtures("fast_retries")
def test_boto3_retries_get_through_resets(s3_server: S3Server, make_proxy: MakeProxy) -> None:
    s3_server.client().create_bucket(Bucket="infra-resets")
    # Not GET: a reset partway through a body reaches the caller (see the next test).
    methods = frozenset({"PUT", "HEAD", "DELETE"})
    proxy = make_proxy(s3_server.endpoint_url, Faults(reset_rate=0.3, methods=methods, seed=3))
    client = s3_server.client(proxy.endpoint_url, max_attempts=10)
    objects = {f"k{index}": os.urandom(70_000 + index) for index in range(10)}

    for key, data in objects.items():
        client.put_object(Bucket="infra-resets", Key=key, Body=data)
        assert client.head_object(Bucket="infra-resets", Key=key)["ContentLength"] == len(data)

    direct = s3_server.client()
    for key, data in objects.items():
        assert direct.get_object(Bucket="infra-resets", Key=key)["Body"].read() == data
    faulted = [r.fault for r in proxy.requests if r.fault]
    assert set(faulted) == {"drop", "cut"}
    assert proxy.faults_injected == len(faulted)


def test_cut_get_body_reaches_the_caller(moto_s3: MotoServer, make_proxy: MakeProxy) -> None:
    """botocore retries only until the response headers; a body cut short raises on read.

    Whoever streams GET bodies must retry that themselves.
    """
    client = moto_s3.client()
    client.create_bucket(Bucket="infra-cut")
    client.put_object(Bucket="infra-cut", Key="k", Body=os.urandom(300_000))
    proxy = make_proxy(moto_s3.endpoint_url)
    through = moto_s3.client(proxy.endpoint_url, max_attempts=5)
    response = through.get_object(Bucket="infra-cut", Key="k")
    response["Body"].close()

    # With this seed the first reset drawn is a "cut": headers and half the body arrive.
    proxy.set_faults(Faults(reset_rate=1.0, methods=frozenset({"GET"}), seed=0, max_faults=1))
    response = through.get_object(Bucket="infra-cut", Key="k")
    with pytest.raises(ResponseStreamingError):
        response["Body"].read()

    assert [r.fault for r in proxy.requests] == ["", "cut"]


# -- the proxy's faults, seen raw --------------------------------------------------------


def _raw_request(endpoint_url: str, method: str, path: str) -> tuple[int, bytes] | str:
    """One request on a fresh connection: (status, body), or the name of the failure."""
    host, port = _host_port(endpoint_url)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.HTTPException) as error:
        return type(error).__name__
    finally:
        connection.close()


def test_fault_rates_and_kinds(moto_s3: MotoServer, make_proxy: MakeProxy) -> None:
    moto_s3.client().create_bucket(Bucket="infra-rates")
    proxy = make_proxy(moto_s3.endpoint_url, Faults(error_rate=0.3, reset_rate=0.2, seed=11))
    outcomes = [_raw_request(proxy.endpoint_url, "GET", "/infra-rates") for _ in range(200)]

    errors = [o for o in outcomes if isinstance(o, tuple) and o[0] >= 500]
    resets = [o for o in outcomes if isinstance(o, str)]
    ok = [o for o in outcomes if isinstance(o, tuple) and o[0] == 200]
    assert len(ok) + len(errors) + len(resets) == 200
    # Binomial(200, p): 8 standard deviations of slack would still catch a wrong rate.
    assert 30 <= len(errors) <= 90
    assert 15 <= len(resets) <= 65
    codes = {ET.fromstring(body).findtext("Code") for _, body in errors}
    assert codes == {"InternalError", "ServiceUnavailable", "SlowDown"}
    assert {status for status, _ in errors} == {500, 503}
    kinds = [r.fault for r in proxy.requests]
    assert proxy.faults_injected == len(errors) + len(resets) == sum(1 for k in kinds if k)
    assert set(kinds) == {"", *FAULT_KINDS}


def test_faults_follow_methods_limits_and_switches(
    moto_s3: MotoServer, make_proxy: MakeProxy
) -> None:
    moto_s3.client().create_bucket(Bucket="infra-switch")
    proxy = make_proxy(
        moto_s3.endpoint_url,
        Faults(error_rate=1.0, methods=frozenset({"HEAD"}), max_faults=3),
    )
    gets = [_raw_request(proxy.endpoint_url, "GET", "/infra-switch") for _ in range(3)]
    heads = [_raw_request(proxy.endpoint_url, "HEAD", "/infra-switch") for _ in range(5)]

    assert [g[0] for g in gets if isinstance(g, tuple)] == [200, 200, 200]
    statuses = [h[0] if isinstance(h, tuple) else h for h in heads]
    assert [s in (500, 503) for s in statuses] == [True, True, True, False, False]
    assert statuses[3:] == [200, 200]
    assert all(isinstance(h, tuple) and h[1] == b"" for h in heads)  # HEAD: never a body
    assert proxy.faults_injected == 3

    proxy.set_faults(Faults(error_rate=1.0))
    assert _raw_request(proxy.endpoint_url, "GET", "/infra-switch") != (200, b"")
    proxy.set_faults(None)
    assert _raw_request(proxy.endpoint_url, "GET", "/infra-switch")[0] == 200
    assert proxy.faults_injected == 4
    proxy.clear()
    assert proxy.requests == [] and proxy.faults_injected == 0


def test_same_seed_same_faults(moto_s3: MotoServer, make_proxy: MakeProxy) -> None:
    moto_s3.client().create_bucket(Bucket="infra-seed")
    faults = Faults(error_rate=0.25, reset_rate=0.25, seed=5)
    runs = []
    for _ in range(2):
        proxy = make_proxy(moto_s3.endpoint_url, faults)
        for _ in range(30):
            _raw_request(proxy.endpoint_url, "GET", "/infra-seed")
        runs.append([r.fault for r in proxy.requests])
    assert runs[0] == runs[1]
    assert any(runs[0])


# -- the proxy's plumbing ------------------------------------------------------------------


def test_keep_alive_connection_is_reused(moto_s3: MotoServer, make_proxy: MakeProxy) -> None:
    moto_s3.client().create_bucket(Bucket="infra-keepalive")
    proxy = make_proxy(moto_s3.endpoint_url)
    connection = http.client.HTTPConnection(*_host_port(proxy.endpoint_url), timeout=10)
    sockets = []
    for method in ("GET", "HEAD", "GET"):
        connection.request(method, "/infra-keepalive")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        sockets.append(connection.sock)
    connection.close()
    assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2]


def _chunked(pieces: list[bytes]) -> bytes:
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    return framed + b"0\r\nx-trailer: yes\r\n\r\n"


@pytest.fixture
def echo_upstream() -> Iterator[tuple[str, list[bytes]]]:
    """A raw HTTP server that stores each request's bytes after the headers and answers 200.

    It reads a chunked body as framed (size lines, chunks, trailers), so what it keeps is
    exactly what arrived on the wire.
    """
    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as stream:
            while stream.readline() not in (b"\r\n", b""):
                pass  # headers
            raw = b""
            while True:
                line = stream.readline()
                raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    break
                raw += stream.read(size + 2)
            while True:
                line = stream.readline()
                raw += line
                if line in (b"\r\n", b""):
                    break
            received.append(raw)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", received
    listener.close()
    thread.join(timeout=5)


def test_chunked_body_passes_byte_for_byte(
    echo_upstream: tuple[str, list[bytes]], make_proxy: MakeProxy
) -> None:
    upstream, received = echo_upstream
    proxy = make_proxy(upstream)
    body = _chunked([os.urandom(100_000), os.urandom(1), os.urandom(70_000)])
    connection = http.client.HTTPConnection(*_host_port(proxy.endpoint_url), timeout=10)
    connection.putrequest("PUT", "/bucket/key", skip_accept_encoding=True)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.putheader("Content-Encoding", "aws-chunked")
    connection.endheaders()
    connection.send(body)
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    connection.close()
    assert received == [body]
    assert proxy.requests[0].headers["content-encoding"] == "aws-chunked"


def test_chunked_put_reaches_moto(moto_s3: MotoServer, make_proxy: MakeProxy) -> None:
    moto_s3.client().create_bucket(Bucket="infra-chunked")
    proxy = make_proxy(moto_s3.endpoint_url)
    pieces = [os.urandom(50_000), os.urandom(3), os.urandom(20_000)]
    connection = http.client.HTTPConnection(*_host_port(proxy.endpoint_url), timeout=10)
    # moto ignores signatures, so a plain chunked PUT is enough to see the body arrive whole.
    connection.request("PUT", "/infra-chunked/key", body=iter(pieces), encode_chunked=True)
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200
    stored = moto_s3.client().get_object(Bucket="infra-chunked", Key="key")["Body"].read()
    assert stored == b"".join(pieces)


def test_large_get_streams_with_bounded_memory(
    seaweed_s3: SeaweedServer, make_proxy: MakeProxy
) -> None:
    data = os.urandom(20 * MiB)
    client = seaweed_s3.client()
    client.create_bucket(Bucket="infra-stream")
    client.put_object(Bucket="infra-stream", Key="big", Body=data)
    del data
    proxy = make_proxy(seaweed_s3.endpoint_url)
    through = seaweed_s3.client(proxy.endpoint_url)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        body = through.get_object(Bucket="infra-stream", Key="big")["Body"]
        for piece in body.iter_chunks(256 * 1024):
            digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    direct = client.get_object(Bucket="infra-stream", Key="big")["Body"].read()
    assert digest.digest() == hashlib.sha256(direct).digest()
    assert peak < 4 * MiB  # client and proxy together, for a 20 MiB body


def test_unreachable_target_answers_502(make_proxy: MakeProxy) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    proxy = make_proxy(f"http://127.0.0.1:{port}")
    outcome = _raw_request(proxy.endpoint_url, "GET", "/anything")
    assert isinstance(outcome, tuple) and outcome[0] == 502


def test_stop_closes_listener_and_open_connections(
    moto_s3: MotoServer, make_proxy: MakeProxy
) -> None:
    moto_s3.client().create_bucket(Bucket="infra-stop")
    proxy = make_proxy(moto_s3.endpoint_url)
    idle = http.client.HTTPConnection(*_host_port(proxy.endpoint_url), timeout=10)
    idle.request("GET", "/infra-stop")
    idle.getresponse().read()
    before = threading.active_count()

    proxy.stop()
    proxy.stop()  # idempotent

    assert threading.active_count() < before  # the serving and handler threads ended
    with pytest.raises(ConnectionError):
        socket.create_connection(_host_port(proxy.endpoint_url), timeout=2).close()
    idle.close()


def test_context_manager_stops(moto_s3: MotoServer) -> None:
    with Proxy(moto_s3.endpoint_url) as proxy:
        assert _raw_request(proxy.endpoint_url, "GET", "/")[0] == 200
    with pytest.raises(ConnectionError):
        socket.create_connection(_host_port(proxy.endpoint_url), timeout=2).close()


# -- server specifics the transfer suites rely on ----------------------------------------


def test_seaweedfs_refuses_wrong_keys(seaweed_s3: SeaweedServer) -> None:
    with pytest.raises(ClientError) as wrong_secret:
        seaweed_s3.client(secret_key="not-the-secret", max_attempts=1).list_buckets()
    with pytest.raises(ClientError) as wrong_key:
        seaweed_s3.client(access_key="AKIDUNKNOWN", max_attempts=1).list_buckets()
    assert _error_code(wrong_secret.value) == ("SignatureDoesNotMatch", 403)
    assert _error_code(wrong_key.value) == ("InvalidAccessKeyId", 403)
    assert seaweed_s3.client().list_buckets()["Buckets"] == []


def test_put_into_a_missing_bucket_is_refused(s3_server: S3Server) -> None:
    client = s3_server.client(max_attempts=1)
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket="infra-missing", Key="k", Body=b"data")
    assert _error_code(refused.value) == ("NoSuchBucket", 404)
    assert client.list_buckets()["Buckets"] == []


def test_seaweedfs_checks_content_md5(seaweed_s3: SeaweedServer) -> None:
    client = seaweed_s3.client(max_attempts=1)
    client.create_bucket(Bucket="infra-md5")
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket="infra-md5", Key="k", Body=b"data", ContentMD5=wrong)
    assert _error_code(refused.value) == ("BadDigest", 400)


def test_seaweedfs_ownership_controls(seaweed_s3: SeaweedServer) -> None:
    """New buckets report BucketOwnerEnforced (as AWS now does); a put changes that."""
    client = seaweed_s3.client()
    client.create_bucket(Bucket="infra-owner", ObjectOwnership="BucketOwnerPreferred")
    rules = client.get_bucket_ownership_controls(Bucket="infra-owner")["OwnershipControls"]
    assert rules["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    client.put_bucket_ownership_controls(
        Bucket="infra-owner",
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerPreferred"}]},
    )
    rules = client.get_bucket_ownership_controls(Bucket="infra-owner")["OwnershipControls"]
    assert rules["Rules"] == [{"ObjectOwnership": "BucketOwnerPreferred"}]


def test_moto_ownership_controls(moto_s3: MotoServer) -> None:
    client = moto_s3.client()
    client.create_bucket(Bucket="infra-preferred", ObjectOwnership="BucketOwnerPreferred")
    client.create_bucket(Bucket="infra-plain")
    preferred = client.get_bucket_ownership_controls(Bucket="infra-preferred")
    with pytest.raises(ClientError) as absent:
        client.get_bucket_ownership_controls(Bucket="infra-plain")
    client.put_bucket_ownership_controls(
        Bucket="infra-plain",
        OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    )
    enforced = client.get_bucket_ownership_controls(Bucket="infra-plain")

    assert preferred["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerPreferred"}]
    assert _error_code(absent.value) == ("OwnershipControlsNotFoundError", 404)
    assert enforced["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]


@pytest.mark.parametrize(
    ("constraint", "reported"),
    [(None, None), ("EU", "EU"), ("eu-west-1", "eu-west-1"), ("ap-southeast-2", "ap-southeast-2")],
)
def test_moto_bucket_locations(
    moto_s3: MotoServer, constraint: str | None, reported: str | None
) -> None:
    client = moto_s3.client()
    if constraint is None:
        client.create_bucket(Bucket="infra-location")
    else:
        client.create_bucket(
            Bucket="infra-location", CreateBucketConfiguration={"LocationConstraint": constraint}
        )
    assert client.get_bucket_location(Bucket="infra-location")["LocationConstraint"] == reported
