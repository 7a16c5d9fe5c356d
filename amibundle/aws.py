"""What every AWS client of amibundle shares: the boto3 session, the client
settings, and the one wording of a refused or failed request.

Each service module (``s3.client``, ``ec2.client``, ``ebs.client``,
``kernel_mapping``) describes its refusals once in a :class:`Service` record
(its error classes, the codes that mean bad credentials or a missing
permission, its hint) and words every botocore exception with
:func:`failure`::

    raise failure(EC2, f"deregister {image_id}", err, attempts=3)

gives ``cannot deregister ami-1: <what went wrong>``, one line, with a hint
where there is something to check. botocore and boto3 are imported only when
a session or a message is made: importing this module costs nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from amibundle.errors import AmibundleError, UsageError, plural

__all__ = [
    "CONNECT_TIMEOUT",
    "CREDENTIAL_CODES",
    "DENIED_CODES",
    "DENIED_HINT",
    "READ_TIMEOUT",
    "Credentials",
    "Service",
    "client_config",
    "error_code",
    "failure",
    "make_client",
    "one_line",
    "refusal_reason",
    "refusals",
    "region_asked",
    "session_for",
    "shared_botocore_session",
]

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

CREDENTIALS_HINT = (
    "check the access key, secret key and session token (or the profile, "
    "environment or instance role they come from)"
)
NO_CREDENTIALS_HINT = (
    "give an access key and secret key, set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, name a profile, or run where an instance role applies"
)
DENIED_HINT = "the credentials are valid but lack the permission for this request"
# Bad or expired credentials, as every service says it; each adds its own codes.
CREDENTIAL_CODES = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
# A permission missing, as S3 ("AccessDenied") and EC2 ("UnauthorizedOperation") say it.
DENIED_CODES = frozenset({"AccessDenied", "UnauthorizedOperation"})

E = TypeVar("E", bound=AmibundleError)


@dataclass(frozen=True)
class Service(Generic[E]):
    """How one service's failures are worded. ``name`` is who refuses the
    credentials ("S3", "AWS"); ``endpoint`` stands for an endpoint botocore
    did not name."""

    name: str
    error: type[E]
    credentials_error: type[E]
    credential_codes: frozenset[str]
    denied_codes: frozenset[str] = DENIED_CODES
    denied_hint: str = DENIED_HINT
    endpoint: str = "the endpoint"


class Credentials(Protocol):
    """What a session is made from (``S3Settings`` and ``Ec2Access`` both are)."""

    @property
    def access_key(self) -> str | None: ...
    @property
    def secret_key(self) -> str | None: ...
    @property
    def session_token(self) -> str | None: ...
    @property
    def profile(self) -> str | None: ...


# --------------------------------------------------------------------------- sessions


_loader_lock = threading.Lock()
_loader: Any = None


def shared_botocore_session() -> Any:
    """A new botocore session sharing one model loader with the earlier ones:
    loading a service model again for every client costs 0.1 s (EC2's, 0.3 s)."""
    import botocore.session

    global _loader
    session = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
        else:
            session.register_component("data_loader", _loader)
    return session


def session_for(credentials: Credentials, service: Service[Any]) -> Any:
    """A boto3 session with the given keys or profile (else the standard
    chain); an unknown profile is ``service``'s credentials error."""
    # boto3 takes a tenth of a second to import: only commands that talk to AWS pay it.
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.session.Session(
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.session_token,
            profile_name=credentials.profile,
            botocore_session=shared_botocore_session(),
        )
        session.region_name  # noqa: B018 -- reads the profile: a missing one fails here, not later
    except ProfileNotFound:
        raise service.credentials_error(
            f"AWS profile {credentials.profile!r} is not in the AWS configuration files"
        ) from None
    return session


def region_asked(region: str | None, session: Any) -> str | None:
    """The region asked for: ``region``, AWS_REGION, AWS_DEFAULT_REGION or the
    session's profile's; None when none is."""
    if region:
        return region
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(variable):
            return os.environ[variable]
    configured: str | None = session.region_name
    return configured or None


def client_config(
    attempts: int,
    *,
    pool: int = 10,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    **options: Any,
) -> Any:
    """botocore's client settings: ``attempts`` tries in all in standard
    retry mode, ``pool`` connections, the timeouts, and a service's own ``options``."""
    from botocore.config import Config

    return Config(
        # total_max_attempts counts the first try; max_attempts would not.
        retries={"total_max_attempts": attempts, "mode": "standard"},
        max_pool_connections=pool,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        **options,
    )


def make_client(
    session: Any, service: str, *, region: str, endpoint_url: str | None, config: Any
) -> Any:
    """``session.client(service, ...)``; an endpoint URL boto3 cannot use is a UsageError."""
    try:
        return session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
    except ValueError as err:
        raise UsageError(f"invalid {service.upper()} endpoint {endpoint_url!r}: {err}") from None


# --------------------------------------------------------------------------- messages


def one_line(text: str) -> str:
    return " ".join(text.split())


def error_code(err: BaseException) -> tuple[str, int]:
    """The error code (else the HTTP status) and the HTTP status of a refused
    request (``("0", 0)`` for an error without a response)."""
    response: dict[str, Any] = getattr(err, "response", None) or {}
    code = str(response.get("Error", {}).get("Code") or "")
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code or str(status), status


def refusal_reason(err: BaseException) -> str:
    """``Code (status)[ Reason][ after N attempts][: message]``: EBS says why
    in a ``Reason`` of its own (INVALID_BLOCK, ...)."""
    code, status = error_code(err)
    response: dict[str, Any] = getattr(err, "response", None) or {}
    message = one_line(str(response.get("Error", {}).get("Message") or ""))
    why = response.get("Reason")
    retries = int(response.get("ResponseMetadata", {}).get("RetryAttempts") or 0)
    reason = f"{code} ({status})" + (f" {why}" if why else "")
    if retries:
        reason += f" after {plural(retries + 1, 'attempt')}"
    if message and message not in (code, str(status)):
        reason += f": {message}"
    return reason


def failure(service: Service[E], what: str, err: Exception, attempts: int | None = None) -> E:
    """One clear line for a failed request: ``cannot <what>: <reason>``.
    ``attempts`` (how many tries the client makes) is said after a failure
    botocore retried on its own (no connection, a timeout)."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(err, ClientError):
        code = error_code(err)[0]
        reason = refusal_reason(err)
        if code in service.credential_codes:
            return service.credentials_error(
                f"cannot {what}: {service.name} refused the credentials ({reason})",
                hint=CREDENTIALS_HINT,
            )
        if code in service.denied_codes:
            return service.error(f"cannot {what}: {reason}", hint=service.denied_hint)
        return service.error(f"cannot {what}: {reason}")
    if isinstance(err, NoCredentialsError):
        return service.credentials_error(
            f"cannot {what}: no AWS credentials found", hint=NO_CREDENTIALS_HINT
        )
    if isinstance(err, PartialCredentialsError):
        return service.credentials_error(f"cannot {what}: {one_line(str(err))}")
    tries = f" (after {plural(attempts, 'attempt')})" if attempts else ""
    if isinstance(err, EndpointConnectionError):
        endpoint = err.kwargs.get("endpoint_url", service.endpoint)
        return service.error(f"cannot {what}: cannot connect to {endpoint}{tries}")
    if isinstance(err, BotoCoreError):
        return service.error(f"cannot {what}: {one_line(str(err))}{tries}")
    return service.error(f"cannot {what}: {one_line(str(err)) or type(err).__name__}")


@contextmanager
def refusals(turn: Callable[[Exception], AmibundleError]) -> Iterator[None]:
    """Turns a botocore exception raised inside the block into ``turn(err)``
    (a service's ``failure`` for what was attempted)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise turn(err) from None
