"""The boto3 S3 client, and S3's refusals turned into one clear line.

:func:`connect` makes a thread-safe client from :class:`~amibundle.s3.settings.S3Settings`;
:func:`s3_errors` is the one place where a botocore exception becomes an
:class:`~amibundle.errors.S3Error` (or a subclass) naming what was attempted::

    with s3_errors(f"delete {bucket.url(key)}", conn):
        conn.client.delete_object(Bucket=bucket.bucket, Key=key)

Inside the block, code that expects a particular refusal catches
``ClientError`` itself and re-raises the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

from amibundle.errors import NoSuchBucketError, S3CredentialsError, S3Error, UsageError
from amibundle.s3.engine import UploadBody
from amibundle.s3.settings import DEFAULT_REGION, S3Settings, given_region, is_aws_url

__all__ = [
    "CONNECT_TIMEOUT",
    "READ_TIMEOUT",
    "Connection",
    "connect",
    "error_code",
    "s3_errors",
    "s3_failure",
    "shared_botocore_session",
]

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60


@dataclass(frozen=True)
class Connection:
    """A boto3 S3 client and what it was made from. ``region_given`` is False
    when no setting named a region and ``region`` is only the default."""

    client: Any
    region: str
    settings: S3Settings
    region_given: bool = True


def connect(settings: S3Settings, *, location: str | None = None) -> Connection:
    """A thread-safe S3 client for ``settings``: the region is the one given
    (:func:`~amibundle.s3.settings.given_region`), else us-east-1; the
    endpoint is ``settings.endpoint_url``, else boto3's own configuration
    (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, a profile's endpoint_url), else AWS."""
    # boto3 takes a tenth of a second to import: only commands that talk to S3 pay it.
    import boto3

    try:
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
            profile_name=settings.profile,
            botocore_session=shared_botocore_session(),
        )
        configured = session.region_name
    except ProfileNotFound:
        raise S3CredentialsError(
            f"AWS profile {settings.profile!r} is not in the AWS configuration files"
        ) from None
    given = given_region(settings, location=location, configured=configured)
    region = given or DEFAULT_REGION
    client = _client(session, settings, region, path_style=bool(settings.endpoint_url))
    if not settings.endpoint_url and not is_aws_url(client.meta.endpoint_url):
        # An endpoint from boto3's own configuration (AWS_ENDPOINT_URL[_S3], a
        # profile's endpoint_url) is an S3-compatible server: path style too.
        client = _client(session, settings, region, path_style=True)
    # Count upload progress only while a PUT body is really sent, not while
    # the signer reads it to hash it (the same trick as s3transfer's).
    client.meta.events.register_first("request-created.s3.PutObject", _body_signal(False))
    client.meta.events.register_last("request-created.s3.PutObject", _body_signal(True))
    return Connection(client, region, settings, region_given=given is not None)


def _client(session: Any, settings: S3Settings, region: str, *, path_style: bool) -> Any:
    from botocore.config import Config

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
        if path_style
        else {"payload_signing_enabled": False},
    )
    try:
        return session.client(
            "s3", region_name=region, endpoint_url=settings.endpoint_url, config=config
        )
    except ValueError as err:  # an endpoint URL boto3 cannot use
        raise UsageError(f"invalid S3 endpoint {settings.endpoint_url!r}: {err}") from None


_loader_lock = threading.Lock()
_loader: Any = None


def shared_botocore_session() -> Any:
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


@contextmanager
def s3_errors(what: str, conn: Connection | None = None) -> Iterator[None]:
    """Turns a botocore exception raised inside the block into ``s3_failure(what, ...)``."""
    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise s3_failure(what, err, conn) from None
