"""The boto3 clients for EBS (the direct APIs) and EC2 (snapshot states), and
their refusals turned into one clear line.

:func:`connect` makes both clients from the
:class:`~amibundle.s3.settings.S3Settings` every AWS command shares
(credentials, profile, region, attempts, jobs). Each service's endpoint is the
one given (``--ebs-url``, ``--ec2-url``), else boto3's own configuration
(``AWS_ENDPOINT_URL_EBS`` / ``AWS_ENDPOINT_URL_EC2``, ``AWS_ENDPOINT_URL``, a
profile's ``endpoint_url``), else AWS's. :func:`ebs_errors` is the one place
where a botocore exception becomes an :class:`~amibundle.errors.EbsError`
naming what was attempted::

    with ebs_errors(f"start a snapshot of {size} GiB", conn):
        conn.ebs.start_snapshot(VolumeSize=size)

botocore's standard retry mode retries throttling, 5xx answers and dropped
connections (``attempts`` tries in all); :func:`is_retryable` tells the same
kinds of failure apart for the block writer's own retries on top.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from amibundle.errors import EbsError, UsageError
from amibundle.s3.settings import DEFAULT_REGION, S3Settings

__all__ = [
    "CONNECT_TIMEOUT",
    "READ_TIMEOUT",
    "EbsConnection",
    "connect",
    "ebs_errors",
    "ebs_failure",
    "error_code",
    "is_retryable",
]

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
QUICK_TIMEOUT = 0.7  # seconds: the deletion after Ctrl-C fits in the 2 s an exit may take
# What EBS and EC2 answer for throttling (botocore's standard mode knows them too).
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "RequestThrottledException",
        "Throttling",
        "RequestLimitExceeded",
        "SlowDown",
        "TooManyRequestsException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "AuthFailure",
        "SignatureDoesNotMatch",
    }
)
_CREDENTIALS_HINT = (
    "check the access key, secret key and session token (or the profile, "
    "environment or instance role they come from)"
)


class EbsConnection:
    """The clients of one command, and what they were made from: ``ebs`` for
    the blocks, ``ec2`` for snapshot states (made on first use: EC2's model
    takes a quarter of a second to load), and ``ebs_quick``/``ec2_quick`` (one
    try, short timeouts) for the clean-up after Ctrl-C, which must not hold
    the exit up."""

    def __init__(
        self, session: Any, region: str, settings: S3Settings, ec2_endpoint_url: str | None
    ) -> None:
        self._session = session
        self.region = region
        self.settings = settings
        self._ec2_endpoint_url = ec2_endpoint_url
        self._ebs_endpoint_url: str | None = None
        self._clients: dict[str, Any] = {}

    def _client(self, name: str, service: str, url: str | None, config: Any) -> Any:
        if name not in self._clients:
            try:
                self._clients[name] = self._session.client(
                    service, region_name=self.region, endpoint_url=url, config=config
                )
            except ValueError as err:  # an endpoint URL boto3 cannot use
                raise UsageError(f"invalid {service.upper()} endpoint {url!r}: {err}") from None
        return self._clients[name]

    def open_ebs(self, endpoint_url: str | None) -> Any:
        self._ebs_endpoint_url = endpoint_url
        config = _config(
            self.settings.attempts, self.settings.jobs + 4, CONNECT_TIMEOUT, READ_TIMEOUT
        )
        return self._client("ebs", "ebs", endpoint_url, config)

    @property
    def ebs(self) -> Any:
        return self._clients["ebs"]

    @property
    def ebs_quick(self) -> Any:
        config = _config(1, 2, QUICK_TIMEOUT, QUICK_TIMEOUT)
        return self._client("ebs_quick", "ebs", self._ebs_endpoint_url, config)

    @property
    def ec2(self) -> Any:
        config = _config(self.settings.attempts, 2, CONNECT_TIMEOUT, READ_TIMEOUT)
        return self._client("ec2", "ec2", self._ec2_endpoint_url, config)

    @property
    def ec2_quick(self) -> Any:
        config = _config(1, 2, QUICK_TIMEOUT, QUICK_TIMEOUT)
        return self._client("ec2_quick", "ec2", self._ec2_endpoint_url, config)


def _region(settings: S3Settings, session: Any) -> str:
    if settings.region:
        return settings.region
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(variable):
            return os.environ[variable]
    configured: str | None = session.region_name
    return configured or DEFAULT_REGION


def _config(attempts: int, pool: int, connect_timeout: float, read_timeout: float) -> Any:
    from botocore.config import Config

    return Config(
        # total_max_attempts counts the first try; max_attempts would not.
        retries={"total_max_attempts": attempts, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        # The blocks carry their own SHA-256 (x-amz-Checksum), checked by EBS;
        # botocore's extra CRC trailers would only cost time.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _check_endpoint(url: object, param: str) -> None:
    """An ``http(s)://host[:port]`` URL (the EC2 one is used late, on a failure:
    it is checked before anything starts)."""
    if url is None:
        return
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{{param}} {url!r} is not an http(s)://HOST[:PORT] URL", param=param)


def connect(
    settings: S3Settings, *, endpoint_url: str | None = None, ec2_endpoint_url: str | None = None
) -> EbsConnection:
    """The clients for ``settings``, with room for ``settings.jobs`` block
    writes at once. ``endpoint_url`` (EBS) and ``ec2_endpoint_url`` override
    boto3's configured endpoints."""
    for url, param in ((endpoint_url, "ebs_url"), (ec2_endpoint_url, "ec2_url")):
        _check_endpoint(url, param)
    # boto3 takes a tenth of a second to import: only commands that talk to AWS pay it.
    import boto3

    try:
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
            profile_name=settings.profile,
        )
    except ProfileNotFound:
        raise EbsError(
            f"AWS profile {settings.profile!r} is not in the AWS configuration files"
        ) from None
    conn = EbsConnection(session, _region(settings, session), settings, ec2_endpoint_url)
    conn.open_ebs(endpoint_url)
    return conn


def error_code(err: ClientError) -> tuple[str, int]:
    """The error code and HTTP status of a refused request."""
    response: dict[str, Any] = getattr(err, "response", None) or {}
    code = str(response.get("Error", {}).get("Code") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code or str(status), status


def is_retryable(err: BaseException) -> bool:
    """Throttling, a 5xx answer, or a connection that failed or dropped: worth
    another try. Anything else (a refusal) would fail the same way again."""
    if isinstance(err, ClientError):
        code, status = error_code(err)
        return status >= 500 or code in THROTTLING_CODES
    return isinstance(err, (BotoConnectionError, HTTPClientError))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _reason(err: ClientError) -> str:
    code, status = error_code(err)
    response: dict[str, Any] = err.response or {}
    message = _one_line(str(response.get("Error", {}).get("Message") or ""))
    # EBS's ValidationException says why in a Reason of its own (INVALID_BLOCK, ...).
    why = response.get("Reason")
    retries = int(response.get("ResponseMetadata", {}).get("RetryAttempts") or 0)
    reason = f"{code} ({status})" + (f" {why}" if why else "")
    if retries:
        reason += f" after {retries + 1} attempts"
    if message and message not in (code, str(status)):
        reason += f": {message}"
    return reason


def ebs_failure(what: str, err: Exception, conn: EbsConnection | None = None) -> EbsError:
    """One clear line for a failed request: ``cannot <what>: <reason>``."""
    if isinstance(err, ClientError):
        code = error_code(err)[0]
        if code in _CREDENTIAL_CODES:
            return EbsError(
                f"cannot {what}: AWS refused the credentials ({_reason(err)})",
                hint=_CREDENTIALS_HINT,
            )
        if code in ("AccessDeniedException", "UnauthorizedOperation", "AccessDenied"):
            return EbsError(
                f"cannot {what}: {_reason(err)}",
                hint="the credentials are valid but lack the permission for this request "
                "(ebs:StartSnapshot, ebs:PutSnapshotBlock, ebs:CompleteSnapshot, "
                "ec2:DescribeSnapshots, ec2:DeleteSnapshot)",
            )
        return EbsError(f"cannot {what}: {_reason(err)}")
    if isinstance(err, NoCredentialsError):
        return EbsError(
            f"cannot {what}: no AWS credentials found",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, name a profile, "
            "or run where an instance role applies",
        )
    if isinstance(err, PartialCredentialsError):
        return EbsError(f"cannot {what}: {_one_line(str(err))}")
    attempts = f" (after {conn.settings.attempts} attempts)" if conn else ""
    if isinstance(err, EndpointConnectionError):
        endpoint = err.kwargs.get("endpoint_url", "the endpoint")
        return EbsError(f"cannot {what}: cannot connect to {endpoint}{attempts}")
    if isinstance(err, BotoCoreError):
        return EbsError(f"cannot {what}: {_one_line(str(err))}{attempts}")
    return EbsError(f"cannot {what}: {_one_line(str(err)) or type(err).__name__}")


@contextmanager
def ebs_errors(what: str, conn: EbsConnection | None = None) -> Iterator[None]:
    """Turns a botocore exception raised inside the block into ``ebs_failure(what, ...)``."""
    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise ebs_failure(what, err, conn) from None
