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

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from amibundle import aws
from amibundle.aws import CONNECT_TIMEOUT, READ_TIMEOUT, shared_botocore_session
from amibundle.errors import NoSuchBucketError, S3CredentialsError, S3Error
from amibundle.s3.engine import UploadBody
from amibundle.s3.settings import DEFAULT_REGION, S3Settings, given_region, is_aws_url

__all__ = [
    "CONNECT_TIMEOUT",
    "READ_TIMEOUT",
    "S3",
    "Connection",
    "connect",
    "error_code",
    "s3_errors",
    "s3_failure",
    "shared_botocore_session",
]


@dataclass(frozen=True)
class Connection:
    """A boto3 S3 client and what it was made from. ``region_given`` is False
    when no setting named a region and ``region`` is only the default."""

    client: Any
    region: str
    settings: S3Settings
    region_given: bool = True


S3 = aws.Service(
    name="S3",
    error=S3Error,
    credentials_error=S3CredentialsError,
    credential_codes=aws.CREDENTIAL_CODES | {"InvalidAccessKeyId", "TokenRefreshRequired"},
    endpoint="the S3 endpoint",
)


def connect(settings: S3Settings, *, location: str | None = None) -> Connection:
    """A thread-safe S3 client for ``settings``: the region is the one given
    (:func:`~amibundle.s3.settings.given_region`), else us-east-1; the
    endpoint is ``settings.endpoint_url``, else boto3's own configuration
    (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, a profile's endpoint_url), else AWS."""
    session = aws.session_for(settings, S3)
    configured = session.region_name
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
    config = aws.client_config(
        settings.attempts,
        pool=settings.jobs + 4,
        signature_version="s3v4",
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
    return aws.make_client(
        session, "s3", region=region, endpoint_url=settings.endpoint_url, config=config
    )


def _body_signal(sending: bool) -> Callable[..., None]:
    def handler(request: Any = None, **_: Any) -> None:
        body = getattr(request, "body", None)
        if isinstance(body, UploadBody):
            body.signal_sending(sending)

    return handler


# --------------------------------------------------------------------------- error messages


def error_code(err: ClientError) -> tuple[str, int]:
    """The S3 error code (else the HTTP status) and HTTP status of a refused request."""
    return aws.error_code(err)


def s3_failure(what: str, err: Exception, conn: Connection | None = None) -> S3Error:
    """One clear line for a failed request: ``cannot <what>: <reason>``
    (:func:`amibundle.aws.failure`; a missing bucket is a NoSuchBucketError)."""
    if isinstance(err, ClientError) and error_code(err)[0] == "NoSuchBucket":
        reason = aws.refusal_reason(err)
        return NoSuchBucketError(f"cannot {what}: the bucket does not exist ({reason})")
    return aws.failure(S3, what, err, conn.settings.attempts if conn else None)


def s3_errors(what: str, conn: Connection | None = None) -> AbstractContextManager[None]:
    """Turns a botocore exception raised inside the block into ``s3_failure(what, ...)``."""
    return aws.refusals(lambda err: s3_failure(what, err, conn))
