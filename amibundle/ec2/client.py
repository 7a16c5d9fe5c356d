"""The boto3 EC2 and STS clients, and their refusals turned into one clear line.

:func:`connect` makes an EC2 client from the same
:class:`~amibundle.s3.settings.S3Settings` the S3 commands use (credentials,
profile, region, attempts), with its own endpoint: ``endpoint_url`` (the
``--ec2-url`` option), else boto3's configuration (AWS_ENDPOINT_URL_EC2,
AWS_ENDPOINT_URL, a profile's endpoint_url), else AWS. :func:`ec2_errors`
is the one place where a botocore exception of EC2 or STS becomes an
:class:`~amibundle.errors.Ec2Error` naming what was attempted::

    with ec2_errors(f"deregister {image_id}", conn):
        conn.client.deregister_image(ImageId=image_id)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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

from amibundle.errors import Ec2CredentialsError, Ec2Error, UsageError
from amibundle.s3.settings import DEFAULT_REGION, S3Settings

__all__ = [
    "Ec2Connection",
    "connect",
    "ec2_errors",
    "ec2_failure",
    "error_code",
    "given_region",
    "session_for",
    "sts_client",
]

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
_CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "ExpiredToken",
        "InvalidToken",
    }
)
_CREDENTIALS_HINT = (
    "check the access key, secret key and session token (or the profile, "
    "environment or instance role they come from)"
)


@dataclass(frozen=True)
class Ec2Connection:
    """A boto3 EC2 client and the region it talks to."""

    client: Any
    region: str
    settings: S3Settings


def session_for(settings: S3Settings) -> Any:
    """A boto3 session with the settings' credentials or profile."""
    import boto3

    from amibundle.s3.client import shared_botocore_session

    try:
        return boto3.session.Session(
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
            profile_name=settings.profile,
            botocore_session=shared_botocore_session(),
        )
    except ProfileNotFound:
        raise Ec2CredentialsError(
            f"AWS profile {settings.profile!r} is not in the AWS configuration files"
        ) from None


def given_region(settings: S3Settings, session: Any) -> str | None:
    """The region asked for: ``settings.region``, AWS_REGION, AWS_DEFAULT_REGION
    or the profile's; None when none is."""
    if settings.region:
        return settings.region
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(variable):
            return os.environ[variable]
    configured: str | None = session.region_name
    return configured or None


def _config(settings: S3Settings) -> Any:
    from botocore.config import Config

    return Config(
        retries={"total_max_attempts": settings.attempts, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )


def connect(
    settings: S3Settings, *, endpoint_url: str | None = None, region: str | None = None
) -> Ec2Connection:
    """An EC2 client: in ``region`` (else the given one, else us-east-1), at
    ``endpoint_url`` (else boto3's configured endpoint, else AWS)."""
    session = session_for(settings)
    region = region or given_region(settings, session) or DEFAULT_REGION
    try:
        client = session.client(
            "ec2", region_name=region, endpoint_url=endpoint_url, config=_config(settings)
        )
    except ValueError as err:
        raise UsageError(f"invalid EC2 endpoint {endpoint_url!r}: {err}") from None
    return Ec2Connection(client, region, settings)


def sts_client(settings: S3Settings, *, region: str | None = None) -> Any:
    """An STS client (endpoint: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, a
    profile's, else AWS's regional one)."""
    session = session_for(settings)
    region = region or given_region(settings, session) or DEFAULT_REGION
    return session.client("sts", region_name=region, config=_config(settings))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_code(err: ClientError) -> str:
    response: dict[str, Any] = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code") or "")


def _reason(err: ClientError) -> str:
    response: dict[str, Any] = err.response or {}
    code = error_code(err)
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    message = _one_line(str(response.get("Error", {}).get("Message") or ""))
    reason = f"{code or status} ({status})"
    return f"{reason}: {message}" if message and message != code else reason


def ec2_failure(what: str, err: Exception, conn: Ec2Connection | None = None) -> Ec2Error:
    """One clear line for a failed EC2 or STS request: ``cannot <what>: <reason>``."""
    if isinstance(err, ClientError):
        reason = _reason(err)
        if error_code(err) in _CREDENTIAL_CODES:
            return Ec2CredentialsError(
                f"cannot {what}: AWS refused the credentials ({reason})", hint=_CREDENTIALS_HINT
            )
        if error_code(err) in ("UnauthorizedOperation", "AccessDenied"):
            return Ec2Error(
                f"cannot {what}: {reason}",
                hint="the credentials are valid but lack the permission for this request",
            )
        return Ec2Error(f"cannot {what}: {reason}")
    if isinstance(err, NoCredentialsError):
        return Ec2CredentialsError(
            f"cannot {what}: no AWS credentials found",
            hint="give an access key and secret key, set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or name a profile",
        )
    if isinstance(err, PartialCredentialsError):
        return Ec2CredentialsError(f"cannot {what}: {_one_line(str(err))}")
    attempts = f" (after {conn.settings.attempts} attempts)" if conn else ""
    if isinstance(err, EndpointConnectionError):
        endpoint = err.kwargs.get("endpoint_url", "the endpoint")
        return Ec2Error(f"cannot {what}: cannot connect to {endpoint}{attempts}")
    return Ec2Error(f"cannot {what}: {_one_line(str(err)) or type(err).__name__}{attempts}")


@contextmanager
def ec2_errors(what: str, conn: Ec2Connection | None = None) -> Iterator[None]:
    """Turns a botocore exception raised inside the block into ``ec2_failure(what, ...)``."""
    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise ec2_failure(what, err, conn) from None
