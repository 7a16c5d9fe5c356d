"""The S3 plumbing under :mod:`amibundle.s3`: how to reach S3, bucket
references, errors, the boto3 client, and the engine that runs many
transfers at once.

:mod:`amibundle.s3` holds the three commands (upload, download, delete) and
re-exports the public names defined here; import them from there.

Threads: transfers run on a pool of ``jobs`` threads. The first failure (or
Ctrl-C in the calling thread) sets a stop flag; queued transfers are
cancelled and running ones notice the flag at their next read or write and
end by raising :class:`Stopped`, a ``BaseException`` so that neither boto3
nor urllib3 mistakes it for a network error worth retrying.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import random
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from amibundle.errors import AmibundleError, UsageError

__all__ = [
    "AclsDisabledError",
    "BucketRef",
    "Connection",
    "FileDigests",
    "LocationMismatchError",
    "NoSuchBucketError",
    "S3CredentialsError",
    "S3Error",
    "S3Settings",
    "Stopped",
    "UploadBody",
    "connect",
    "error_code",
    "hash_file",
    "parse_bucket",
    "region_from_url",
    "region_of_location",
    "resolve_region",
    "retry_delay",
    "run_parallel",
    "s3_failure",
    "write_all",
]

DEFAULT_REGION = "us-east-1"
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
_CHUNK = 1 << 20
T = TypeVar("T")


# --------------------------------------------------------------------------- errors


class S3Error(AmibundleError):
    """S3 refused a request or could not be reached (classic exit 3)."""

    classic_exit = 3


class LocationMismatchError(S3Error):
    """The bucket exists in another location than the one asked for (classic exit 10)."""

    classic_exit = 10


class AclsDisabledError(S3Error):
    """The bucket's Object Ownership is BucketOwnerEnforced: ACLs are disabled,
    so the grant that lets EC2 read the bundle cannot be set."""


class S3CredentialsError(S3Error):
    """No credentials were found, or S3 refused them."""


class NoSuchBucketError(S3Error):
    """The bucket does not exist."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3.

    Explicit keys (with the session token when given) win; otherwise boto3's
    standard chain applies (environment, ``profile``, instance role).
    ``attempts`` is the total number of tries per request (botocore's
    standard retry mode: backoff on 5xx, throttling such as SlowDown, and
    connection errors); ``jobs`` is the number of transfers run at once.
    """

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    attempts: int = 3
    jobs: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise UsageError(f"attempts must be a whole number, not {self.attempts!r}")
        if self.attempts < 1:
            raise UsageError(f"attempts must be at least 1, not {self.attempts}")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise UsageError(f"jobs must be a whole number of at least 1, not {self.jobs!r}")
        if (self.access_key is None) != (self.secret_key is None):
            raise UsageError("give both an access key and a secret key, or neither")
        if self.session_token is not None and self.access_key is None:
            raise UsageError("a session token needs an access key and a secret key too")


# --------------------------------------------------------------------------- buckets

_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _bucket_name_problem(name: str) -> str | None:
    # The classic "S3 safe" rule, with upper case allowed as old US buckets have it.
    if not _BUCKET_NAME.fullmatch(name):
        return (
            f"bucket name {name!r} is not valid: use 3 to 255 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return None
    return f"bucket name {name!r} is not valid: it has the form of an IP address"


def _prefix_problem(prefix: str) -> str | None:
    if _CONTROL.search(prefix):
        return f"key prefix {prefix!r} has a control character"
    # Keys are flat in S3, but servers that map keys to files (SeaweedFS's
    # filer, MinIO) may fold "a/../b" into "b": a prefix must never be able
    # to reach keys outside itself, so its folder components must be plain.
    for component in prefix.split("/")[:-1]:
        if component in ("", ".", ".."):
            return (
                f"key prefix {prefix!r} has an empty, '.' or '..' component; "
                "give folder names separated by single '/'"
            )
    return None


@dataclass(frozen=True)
class BucketRef:
    """A bucket and the key prefix every object key starts with
    (``parse_bucket("a/b/c/")`` is ``BucketRef("a", "b/c/")``)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        problem = _bucket_name_problem(self.bucket) or _prefix_problem(self.prefix)
        if problem is not None:
            raise UsageError(problem)

    def key(self, name: str) -> str:
        """The object key of the file ``name``."""
        return self.prefix + name

    def url(self, key: str | None = None) -> str:
        """``s3://bucket/key`` (the prefix itself without ``key``), for messages."""
        return f"s3://{self.bucket}/{self.prefix if key is None else key}"

    def __str__(self) -> str:
        return self.url()


def parse_bucket(value: str) -> BucketRef:
    """Parses the classic ``bucket[/key/prefix]`` argument: slashes around it
    are dropped, the first component is the bucket, the rest (if any) is the
    key prefix with a trailing ``/``."""
    words = value.strip("/").split("/")
    if not words[0]:
        raise UsageError(f"no bucket name in {value!r}")
    rest = words[1:]
    return BucketRef(words[0], "/".join(rest) + "/" if rest else "")


# --------------------------------------------------------------------------- regions


def region_of_location(location: str) -> str:
    """The region of an S3 location constraint (``EU`` and ``US`` are the
    old spellings of eu-west-1 and us-east-1; none means US Standard)."""
    if location in ("", "US"):
        return DEFAULT_REGION
    if location == "EU":
        return "eu-west-1"
    return location


def region_from_url(url: str) -> str:
    """The classic derivation of the signing region from an AWS endpoint's
    host name (``s3-eu-west-1.amazonaws.com``, ``s3.us-west-2.amazonaws.com``);
    us-east-1 for anything else. Unlike the classic tools, only AWS host
    names are read this way: ``s3.example.com`` is no region "example"."""
    host = (urlsplit(url).hostname or "").lower()
    labels = host.split(".")
    if not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return DEFAULT_REGION
    if host in ("s3.amazonaws.com", "s3-external-1.amazonaws.com") or len(labels) < 3:
        return DEFAULT_REGION
    first, second = labels[0], labels[1]
    if first.startswith("s3-") and len(first) > 3:
        return first[3:]
    if first == "s3":
        # s3.dualstack.<region>.amazonaws.com: the region is the next label.
        if second == "dualstack" and len(labels) > 3:
            return labels[2]
        return second
    return DEFAULT_REGION


def resolve_region(
    settings: S3Settings, *, location: str | None = None, configured: str | None = None
) -> str:
    """The signing region: ``settings.region``; else the region of the
    requested bucket ``location`` (upload); else AWS_REGION or
    AWS_DEFAULT_REGION; else the ``configured`` one (the profile's); else
    derived from the endpoint URL's host; else us-east-1."""
    if settings.region:
        return settings.region
    if location:
        return region_of_location(location)
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(variable):
            return os.environ[variable]
    if configured:
        return configured
    if settings.endpoint_url:
        return region_from_url(settings.endpoint_url)
    return DEFAULT_REGION


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Connection:
    """A boto3 S3 client and what it was made from."""

    client: Any
    region: str
    settings: S3Settings


def connect(settings: S3Settings, *, location: str | None = None) -> Connection:
    """A thread-safe S3 client for ``settings`` (see :func:`resolve_region`)."""
    # boto3 takes a tenth of a second to import: only commands that talk to S3 pay it.
    import boto3
    from botocore.config import Config

    try:
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
            profile_name=settings.profile,
            botocore_session=_botocore_session(),
        )
        configured = session.region_name
    except ProfileNotFound:
        raise S3CredentialsError(
            f"AWS profile {settings.profile!r} is not in the AWS configuration files"
        ) from None
    region = resolve_region(settings, location=location, configured=configured)
    config = Config(
        signature_version="s3v4",
        # total_max_attempts counts the first try; max_attempts would not.
        retries={"total_max_attempts": settings.attempts, "mode": "standard"},
        max_pool_connections=settings.jobs + 4,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        # Newer botocore adds CRC trailers to every upload by default; several
        # S3-compatible servers reject them. Content-MD5 protects our PUTs.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Custom endpoints rarely resolve bucket host names; path style works everywhere.
        # Content-MD5 (a signed header) already guards each body: hashing it
        # again with SHA-256 for the signature, as botocore does over plain
        # HTTP, would only cost a third read of every part.
        s3={"addressing_style": "path", "payload_signing_enabled": False}
        if settings.endpoint_url
        else {"payload_signing_enabled": False},
    )
    try:
        client = session.client(
            "s3", region_name=region, endpoint_url=settings.endpoint_url, config=config
        )
    except ValueError as err:  # an endpoint URL boto3 cannot use
        raise UsageError(f"invalid S3 endpoint {settings.endpoint_url!r}: {err}") from None
    # Count upload progress only while a PUT body is really sent, not while
    # the signer reads it to hash it (the same trick as s3transfer's).
    client.meta.events.register_first("request-created.s3.PutObject", _body_signal(False))
    client.meta.events.register_last("request-created.s3.PutObject", _body_signal(True))
    return Connection(client, region, settings)


_loader_lock = threading.Lock()
_loader: Any = None


def _botocore_session() -> Any:
    """A new botocore session sharing one model loader with the earlier ones:
    loading S3's service model again for every client costs 0.1 s."""
    import botocore.session

    global _loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


def _body_signal(sending: bool) -> Callable[..., None]:
    def handler(request: Any = None, **_: Any) -> None:
        body = getattr(request, "body", None)
        if isinstance(body, UploadBody):
            body.signal_sending(sending)

    return handler


# --------------------------------------------------------------------------- error messages

_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
    }
)
_CREDENTIALS_HINT = (
    "check the access key, secret key and session token (or the profile, "
    "environment or instance role they come from)"
)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_code(err: ClientError) -> tuple[str, int]:
    """The S3 error code and HTTP status of a refused request."""
    response: dict[str, Any] = getattr(err, "response", None) or {}
    code = str(response.get("Error", {}).get("Code") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code or str(status), status


def _client_error_reason(err: ClientError) -> str:
    code, status = error_code(err)
    response: dict[str, Any] = err.response or {}
    message = _one_line(str(response.get("Error", {}).get("Message") or ""))
    retries = int(response.get("ResponseMetadata", {}).get("RetryAttempts") or 0)
    reason = f"{code} ({status})"
    if retries:
        reason += f" after {_count(retries + 1, 'attempt')}"
    if message and message not in (code, str(status)):
        reason += f": {message}"
    return reason


def s3_failure(what: str, err: Exception, conn: Connection | None = None) -> S3Error:
    """One clear line for a failed request: ``cannot <what>: <reason>``."""
    if isinstance(err, ClientError):
        code = error_code(err)[0]
        reason = _client_error_reason(err)
        if code in _CREDENTIAL_CODES:
            return S3CredentialsError(
                f"cannot {what}: S3 refused the credentials ({reason})", hint=_CREDENTIALS_HINT
            )
        if code == "NoSuchBucket":
            return NoSuchBucketError(f"cannot {what}: the bucket does not exist ({reason})")
        if code == "AccessDenied":
            return S3Error(
                f"cannot {what}: {reason}",
                hint="the credentials are valid but lack the permission for this request",
            )
        return S3Error(f"cannot {what}: {reason}")
    if isinstance(err, NoCredentialsError):
        return S3CredentialsError(
            f"cannot {what}: no AWS credentials found",
            hint="give an access key and secret key, set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or name a profile",
        )
    if isinstance(err, PartialCredentialsError):
        return S3CredentialsError(f"cannot {what}: {_one_line(str(err))}")
    attempts = f" (after {_count(conn.settings.attempts, 'attempt')})" if conn else ""
    if isinstance(err, EndpointConnectionError):
        endpoint = err.kwargs.get("endpoint_url", "the S3 endpoint")
        return S3Error(f"cannot {what}: cannot connect to {endpoint}{attempts}")
    if isinstance(err, BotoCoreError):
        return S3Error(f"cannot {what}: {_one_line(str(err))}{attempts}")
    return S3Error(f"cannot {what}: {_one_line(str(err)) or type(err).__name__}")


# --------------------------------------------------------------------------- local files


@dataclass(frozen=True)
class FileDigests:
    size: int
    md5: bytes
    sha1: str

    @property
    def md5_hex(self) -> str:
        return self.md5.hex()

    @property
    def md5_base64(self) -> str:
        return base64.b64encode(self.md5).decode("ascii")


def hash_file(handle: BinaryIO, stop: threading.Event) -> FileDigests:
    """Size, MD5 and SHA-1 of an open file, read once from where it is."""
    md5 = hashlib.md5()
    sha1 = hashlib.sha1()
    size = 0
    while chunk := handle.read(_CHUNK):
        if stop.is_set():
            raise Stopped
        md5.update(chunk)
        sha1.update(chunk)
        size += len(chunk)
    return FileDigests(size, md5.digest(), sha1.hexdigest())


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --------------------------------------------------------------------------- the engine


class Stopped(BaseException):
    """Raised inside a transfer when the batch it belongs to was stopped: a
    BaseException, like KeyboardInterrupt, so that no ``except Exception``
    in boto3 or urllib3 takes it for a failed request and retries."""


class UploadBody:
    """A part file as a PUT body: reports bytes as they are sent (taking them
    back when a retry rewinds) and ends the request once ``stop`` is set.

    An exception raised by ``on_bytes`` is kept in :attr:`failure` and the
    request is ended with :class:`Stopped`: raised as itself, botocore would
    take it for a network error and retry.
    """

    def __init__(
        self, handle: BinaryIO, *, on_bytes: Callable[[int], None], stop: threading.Event
    ) -> None:
        self._handle = handle
        self._on_bytes = on_bytes
        self._stop = stop
        self._sending = False
        self._reported = 0  # bytes reported, i.e. the position the count is at
        self.failure: Exception | None = None

    def signal_sending(self, sending: bool) -> None:
        self._sending = sending

    def _report(self, nbytes: int) -> None:
        try:
            self._on_bytes(nbytes)
        except Exception as err:
            self.failure = err
            raise Stopped from err
        self._reported += nbytes

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise Stopped
        data = self._handle.read(size)
        if self._sending and data:
            self._report(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._handle.seek(offset, whence)
        if self._reported > position:  # a retry starts over
            self._report(position - self._reported)
        return position

    def tell(self) -> int:
        return self._handle.tell()


def retry_delay(attempt: int) -> float:
    """Seconds to wait before try ``attempt + 1``: full-jitter exponential
    backoff like botocore's standard mode (base 1 s, at most 20 s)."""
    return float(random.uniform(0, min(20.0, 2.0 ** (attempt - 1))))


def run_parallel(tasks: Sequence[Callable[[], T]], *, jobs: int, stop: threading.Event) -> list[T]:
    """Runs ``tasks`` on up to ``jobs`` threads, in order of submission, and
    returns their results in the same order.

    The first failure (or a KeyboardInterrupt while waiting) sets ``stop``,
    cancels what has not started, waits for running tasks to notice ``stop``
    and raises that first failure.
    """
    if not tasks:
        return []
    results: dict[int, T] = {}
    with ThreadPoolExecutor(
        max_workers=min(jobs, len(tasks)), thread_name_prefix="amibundle-s3"
    ) as pool:
        futures: dict[Future[T], int] = {pool.submit(task): i for i, task in enumerate(tasks)}
        pending: set[Future[T]] = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in sorted(done, key=futures.__getitem__):
                    error = future.exception()
                    if error is not None and not isinstance(error, Stopped):
                        raise error
                    if error is None:
                        results[futures[future]] = future.result()
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            raise
    if len(results) != len(tasks):  # only when tasks were stopped from outside
        raise Stopped
    return [results[i] for i in range(len(tasks))]
