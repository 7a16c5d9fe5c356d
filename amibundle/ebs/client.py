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

from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from amibundle import aws
from amibundle.aws import CONNECT_TIMEOUT, READ_TIMEOUT
from amibundle.errors import EbsError, UsageError
from amibundle.s3.settings import DEFAULT_REGION, S3Settings

__all__ = [
    "CONNECT_TIMEOUT",
    "EBS",
    "READ_TIMEOUT",
    "EbsConnection",
    "connect",
    "ebs_errors",
    "ebs_failure",
    "error_code",
    "is_retryable",
]

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
# The EBS direct APIs' refusals, and EC2's for the snapshot calls.
EBS = aws.Service(
    name="AWS",
    error=EbsError,
    credentials_error=EbsError,
    credential_codes=aws.CREDENTIAL_CODES
    | {"AuthFailure", "UnrecognizedClientException", "InvalidSignatureException"}
    | {"ExpiredTokenException"},
    denied_codes=aws.DENIED_CODES | {"AccessDeniedException"},
    denied_hint=f"{aws.DENIED_HINT} (ebs:StartSnapshot, ebs:PutSnapshotBlock, "
    "ebs:CompleteSnapshot, ec2:DescribeSnapshots, ec2:DeleteSnapshot)",
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
            self._clients[name] = aws.make_client(
                self._session, service, region=self.region, endpoint_url=url, config=config
            )
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


def _config(attempts: int, pool: int, connect_timeout: float, read_timeout: float) -> Any:
    return aws.client_config(
        attempts,
        pool=pool,
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
    session = aws.session_for(settings, EBS)
    region = aws.region_asked(settings.region, session) or DEFAULT_REGION
    conn = EbsConnection(session, region, settings, ec2_endpoint_url)
    conn.open_ebs(endpoint_url)
    return conn


def error_code(err: ClientError) -> tuple[str, int]:
    """The error code (else the HTTP status) and HTTP status of a refused request."""
    return aws.error_code(err)


def is_retryable(err: BaseException) -> bool:
    """Throttling, a 5xx answer, or a connection that failed or dropped: worth
    another try. Anything else (a refusal) would fail the same way again."""
    if isinstance(err, ClientError):
        code, status = error_code(err)
        return status >= 500 or code in THROTTLING_CODES
    return isinstance(err, (BotoConnectionError, HTTPClientError))


def ebs_failure(what: str, err: Exception, conn: EbsConnection | None = None) -> EbsError:
    """One clear line for a failed request: ``cannot <what>: <reason>``
    (:func:`amibundle.aws.failure`; EBS's own ``Reason`` included)."""
    return aws.failure(EBS, what, err, conn.settings.attempts if conn else None)


def ebs_errors(what: str, conn: EbsConnection | None = None) -> AbstractContextManager[None]:
    """Turns a botocore exception raised inside the block into ``ebs_failure(what, ...)``."""
    return aws.refusals(lambda err: ebs_failure(what, err, conn))
